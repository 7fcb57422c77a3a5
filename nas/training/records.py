"""Store rows of what follows a search: exported models and proxy-fidelity checks (tables nas_export, nas_fidelity).

The tables sit on the store's declarative Base; Alembic revision 0002 (nas/migrations) creates them, 0003 adds
nas_fidelity.reference.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, inspect, select
from sqlalchemy.orm import Mapped, defer, mapped_column

from nas.store import Base, Store, StudyRow, code_version


def utc_now() -> dt.datetime:
    """Now, in UTC, without tzinfo (as the store keeps times)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class ExportRow(Base):
    """One export: the trial a policy chose and the config file written for it."""

    __tablename__ = "nas_export"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("nas_study.id", ondelete="CASCADE"), nullable=False, index=True)
    trial_number: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    policy: Mapped[dict] = mapped_column(JSON, nullable=False)  # {"policy": ..., its bound}
    objectives: Mapped[dict] = mapped_column(JSON, nullable=False)
    code_version: Mapped[str] = mapped_column(String(255), nullable=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now, nullable=False)


class FidelityRow(Base):
    """One fidelity check: proxy quality against quality at a reference proxy, for the top trials of a front."""

    __tablename__ = "nas_fidelity"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("nas_study.id", ondelete="CASCADE"), nullable=False, index=True)
    trials: Mapped[list] = mapped_column(JSON, nullable=False)  # trial numbers, in proxy-ranking order
    proxy_quality: Mapped[list] = mapped_column(JSON, nullable=False)
    long_quality: Mapped[list] = mapped_column(JSON, nullable=False)  # at the reference proxy
    budget_factor: Mapped[float] = mapped_column(Float, nullable=False)  # reference tokens / the study's
    budget_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    kendall_tau: Mapped[float | None] = mapped_column(Float)  # None when undefined (every quality tied)
    code_version: Mapped[str] = mapped_column(String(255), nullable=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now, nullable=False)
    reference: Mapped[dict | None] = mapped_column(JSON)  # the reference ProxySpec (revision 0003; None before)


@dataclass(frozen=True)
class Fidelity:
    """A detached fidelity row."""

    trials: list[int]
    proxy_quality: list[float]
    long_quality: list[float]
    budget_factor: float
    budget_tokens: int
    kendall_tau: float | None
    code_version: str
    created: dt.datetime
    reference: dict[str, Any] | None = None  # the reference proxy it retrained at; None: older checks (same size)


def describe_proxy(proxy: dict[str, Any]) -> str:
    """'name: L layers x width D, seq_len S, T tokens' of a stored ProxySpec dict."""
    tokens = proxy.get("budget_tokens")
    return (f"{proxy.get('name', '?')}: {proxy.get('n_layers', '?')} layers x width {proxy.get('d_model', '?')}, "
            f"seq_len {proxy.get('seq_len', '?')}, {f'{tokens:,}' if isinstance(tokens, int) else '?'} tokens")


def _study_id(store: Store, study: str) -> int:
    with store._session() as s:
        sid = s.scalar(select(StudyRow.id).where(StudyRow.name == study))
    if sid is None:
        raise ValueError(f"study={study!r} not found in the store")
    return sid


def record_export(store: Store, study: str, trial_number: int, name: str, path: str, policy: dict[str, Any],
                  objectives: dict[str, float]) -> None:
    """Insert an export row."""
    sid = _study_id(store, study)
    with store._session.begin() as s:
        s.add(ExportRow(study_id=sid, trial_number=trial_number, name=name, path=path, policy=policy,
                        objectives=objectives, code_version=code_version()))


def _has(store: Store, table: str) -> bool:
    return inspect(store.engine).has_table(table)


def exports(store: Store, study: str) -> list[dict[str, Any]]:
    """The study's exports, oldest first, as plain dicts (reads only; none before the first export)."""
    if not _has(store, ExportRow.__tablename__):
        return []
    sid = _study_id(store, study)
    with store._session() as s:
        rows = s.scalars(select(ExportRow).where(ExportRow.study_id == sid).order_by(ExportRow.id))
        return [{"trial": r.trial_number, "name": r.name, "path": r.path, "policy": r.policy,
                 "objectives": r.objectives, "code_version": r.code_version, "created": r.created} for r in rows]


def record_fidelity(store: Store, study: str, result: Fidelity) -> None:
    """Insert a fidelity row."""
    sid = _study_id(store, study)
    with store._session.begin() as s:
        s.add(FidelityRow(study_id=sid, trials=result.trials, proxy_quality=result.proxy_quality,
                          long_quality=result.long_quality, budget_factor=result.budget_factor,
                          budget_tokens=result.budget_tokens, kendall_tau=result.kendall_tau,
                          code_version=result.code_version, created=result.created, reference=result.reference))


def fidelity_results(store: Store, study: str) -> list[Fidelity]:
    """The study's fidelity checks, oldest first (what its dashboard page shows when present); reads only."""
    if not _has(store, FidelityRow.__tablename__):
        return []
    sid = _study_id(store, study)
    has_reference = store.has_column(FidelityRow.__tablename__, "reference")  # read-only stores may predate 0003
    q = select(FidelityRow).where(FidelityRow.study_id == sid).order_by(FidelityRow.id)
    with store._session() as s:
        rows = s.scalars(q if has_reference else q.options(defer(FidelityRow.reference, raiseload=True)))
        return [Fidelity(r.trials, r.proxy_quality, r.long_quality, r.budget_factor, r.budget_tokens,
                         r.kendall_tau, r.code_version, r.created, r.reference if has_reference else None)
                for r in rows]
