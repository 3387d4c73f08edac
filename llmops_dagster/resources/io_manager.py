"""The IO manager of the evaluation assets: each run reads the values its own steps wrote."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from llmops_dagster.files import atomic_write_bytes

if TYPE_CHECKING:
    from llmops_dagster.config import Settings


class RunScopedIOManager(dg.ConfigurableIOManager):
    """Pickles an asset's value per run (``<base_dir>/<asset>/runs/<run id>.pickle``) and as the
    asset's latest value (``latest.pickle``).

    Why: Dagster's filesystem IO manager keeps one file per asset, so two runs of the same job
    at once overwrite each other's output, and a downstream step reads whichever run wrote last
    — ``champion_model`` of one evaluation would apply the *other* evaluation's decision. Here a
    step reads the value its own run produced; a step materialized alone (the upstream not in
    the run) reads the latest stored value, as with the default IO manager.
    """

    base_dir: str = Field(description="Folder of the stored values (under LLMOPS_HOME).")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, resolve_secrets: bool = False
    ) -> RunScopedIOManager:
        del resolve_secrets  # no secret among these fields
        return cls(base_dir=str(settings.home / "dagster-io"))

    def _folder(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir).joinpath(*key.path)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        import pickle

        folder = self._folder(context.asset_key)
        payload = pickle.dumps(obj)
        atomic_write_bytes(folder / "runs" / f"{context.run_id}.pickle", payload)
        atomic_write_bytes(folder / "latest.pickle", payload)

    def load_input(self, context: dg.InputContext) -> Any:
        import pickle

        folder = self._folder(context.asset_key)
        path = folder / "latest.pickle"
        upstream = context.upstream_output
        try:
            run_id = upstream.run_id if upstream is not None else None
        except dg.DagsterInvariantViolationError:  # the upstream asset was not in this run
            run_id = None
        if run_id is not None and (folder / "runs" / f"{run_id}.pickle").is_file():
            path = folder / "runs" / f"{run_id}.pickle"
        return pickle.loads(path.read_bytes())
