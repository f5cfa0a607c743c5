"""/rules: alert rules (list, create, get, delete); the actions an alert started; a run's checkpoint kept as
"best before collapse"."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from sqd.server.alerts import actions, rules_store
from sqd.server.alerts.rules import AlertActionPublic, BestBeforeCollapse, RuleCreate, RulePublic, RulesPublic
from sqd.server.api.deps import CtxDep, ReadDep, RunDep, SessionDep, TokenDep

router = APIRouter(tags=["rules"])
RuleId = Annotated[int, Path(ge=1, le=2**31 - 1, description="rule id")]


@router.get("/rules", response_model=RulesPublic, dependencies=[ReadDep])
def list_rules(session: SessionDep,
               run_id: Annotated[str | None, Query(min_length=1, max_length=64,
                                                   description="only the rules that apply to this run")] = None,
               ) -> RulesPublic:
    return rules_store.list_rules(session, run_id)


@router.post("/rules", response_model=RulePublic, status_code=status.HTTP_201_CREATED, dependencies=[TokenDep],
             responses={422: {"description": "invalid rule; `loc` names the field"}})
def create_rule(session: SessionDep, body: RuleCreate) -> RulePublic:
    """A threshold / trend / NaN / stalled rule, or turning-point actions, for one run, a preset or all runs."""
    return rules_store.create_rule(session, body)


@router.get("/rules/{rule_id}", response_model=RulePublic, dependencies=[ReadDep])
def get_rule(session: SessionDep, rule_id: RuleId) -> RulePublic:
    rule = rules_store.get_rule(session, rule_id)
    if rule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"rule {rule_id} not found")
    return rule


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[TokenDep])
def delete_rule(session: SessionDep, rule_id: RuleId) -> Response:
    """Deletes the rule (the built-in turning-point rule is disabled instead)."""
    if not rules_store.delete_rule(session, rule_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"rule {rule_id} not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/alerts/{alert_id}/actions", response_model=list[AlertActionPublic], dependencies=[ReadDep])
def alert_actions_list(session: SessionDep,
                       alert_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> list[AlertActionPublic]:
    """Webhook deliveries (status, attempts, last error), stop requests and kept checkpoints of one alert."""
    out = []
    for row in actions.actions_of(session, [alert_id]):
        action = AlertActionPublic.model_validate(row)
        out.append(action.model_copy(update={"detail": {}}) if row.kind == "webhook" else action)
    return out


@router.get("/runs/{run_id}/best-before-collapse", response_model=BestBeforeCollapse, dependencies=[ReadDep])
def best_before_collapse(session: SessionDep, run: RunDep) -> BestBeforeCollapse:
    """The checkpoint a rule with `keep_best` kept: the last one before the run's turning point."""
    best = actions.best_before_collapse(session, run.id)
    if best is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run.id!r} has no checkpoint kept before a collapse")
    return BestBeforeCollapse.model_validate(best)


@router.get("/runs/{run_id}/best-before-collapse/checkpoint", response_class=Response, dependencies=[ReadDep],
            responses={200: {"content": {"application/octet-stream": {}}}})
def best_before_collapse_file(ctx: CtxDep, session: SessionDep, run: RunDep) -> Response:
    """The kept checkpoint file itself (a torch.save dict, see DESIGN.md), checked against its sha256."""
    best = best_before_collapse(session, run)
    data = actions.read_checkpoint(ctx.artifacts, run.id, best.uri, best.sha256)
    name = f"best-before-collapse-{run.id}-step{best.checkpoint_step}.pt"
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
