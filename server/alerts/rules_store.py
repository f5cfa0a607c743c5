"""Rules in the database: create, list, delete (the built-in one is only disabled), and which rules apply to a run."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from sqd.errors import ConfigError
from sqd.server.alerts.models import AlertRule, RuleState
from sqd.server.alerts.rules import RuleCreate, RulePublic, RulesPublic, normalize
from sqd.server.store.models import Run


def create_rule(session: Session, body: RuleCreate) -> RulePublic:
    fields = normalize(body)
    if body.run_id is not None and session.get(Run, body.run_id) is None:  # else the foreign key fails: a 500
        raise ConfigError(f"rule: run_id: run {body.run_id!r} not found",
                          [{"loc": ["body", "run_id"], "msg": f"run {body.run_id!r} not found"}])
    row = AlertRule(builtin=False, **fields)
    session.add(row)
    session.flush()
    return RulePublic.model_validate(row)


def get_rule(session: Session, rule_id: int) -> RulePublic | None:
    row = session.get(AlertRule, rule_id)
    return None if row is None else RulePublic.model_validate(row)


def list_rules(session: Session, run_id: str | None = None) -> RulesPublic:
    query = select(AlertRule)
    if run_id is not None:
        preset = session.scalar(select(Run.preset).where(Run.id == run_id))
        query = query.where(_applies(run_id, preset))
    rows = session.scalars(query.order_by(AlertRule.id)).all()
    return RulesPublic(data=[RulePublic.model_validate(r) for r in rows], count=len(rows))


def delete_rule(session: Session, rule_id: int) -> bool:
    """Delete a rule and its state; the built-in turning-point rule is disabled instead (so it can be told apart
    from a rule that never existed, and alerts already raised keep their rule's name)."""
    row = session.get(AlertRule, rule_id)
    if row is None:
        return False
    if row.builtin:
        row.enabled = False
    else:
        session.query(RuleState).filter(RuleState.rule_id == rule_id).delete()
        session.delete(row)
    session.flush()
    return True


def _applies(run_id: str, preset: str | None) -> ColumnElement[bool]:
    scope_preset = AlertRule.preset == preset if preset is not None else AlertRule.preset.is_(None)
    return or_(AlertRule.run_id == run_id,
               (AlertRule.run_id.is_(None) & scope_preset),
               (AlertRule.run_id.is_(None) & AlertRule.preset.is_(None)))


def rules_for_run(session: Session, run_id: str, preset: str | None) -> list[AlertRule]:
    """Enabled rules that apply to the run, most specific first (run, then preset, then all runs; user rules
    before the built-in one)."""
    rows = session.scalars(select(AlertRule).where(AlertRule.enabled.is_(True), _applies(run_id, preset))).all()
    return sorted(rows, key=lambda r: (r.run_id is None, r.preset is None, r.builtin, r.id))

