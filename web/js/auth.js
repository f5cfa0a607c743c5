// Sign-in: the URL that `sqd up` prints (/?token=…) stores the token in this browser and drops it from the
// address bar; writes then send `Authorization: Bearer`, EventSource and <img> send `?access_token=`.

const STORAGE_KEY = "sqd.token";

/** Pure: the token in a URL's query and the URL without it ({token: null} when there is none). */
export function extractToken(href) {
  const url = new URL(href);
  const token = url.searchParams.get("token");
  if (!token) return { token: null, cleanUrl: href };
  url.searchParams.delete("token");
  return { token, cleanUrl: url.toString() };
}

/** Take a token from the address bar, if any, into storage and out of the visible URL and history. */
export function captureToken() {
  const { token, cleanUrl } = extractToken(window.location.href);
  if (token) {
    setToken(token);
    window.history.replaceState(null, "", cleanUrl);
  }
}

export function getToken() {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage disabled: read-only
  }
}

export function setToken(token) {
  window.localStorage.setItem(STORAGE_KEY, token);
  window.dispatchEvent(new CustomEvent("sqd:auth"));
}

export function clearToken() {
  window.localStorage.removeItem(STORAGE_KEY);
  window.dispatchEvent(new CustomEvent("sqd:auth"));
}

/** A URL with `access_token` added when signed in (for EventSource and images, which cannot send headers). */
export function withAccessToken(path) {
  const token = getToken();
  if (!token) return path;
  return `${path}${path.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(token)}`;
}
