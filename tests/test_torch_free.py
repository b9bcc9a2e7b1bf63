"""The cost model and the device profiles need no torch: a deployment script, a CI job or a
search over costs alone must be able to use them where torch is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, _NoTorch())
"""


def _run_without_torch(body: str) -> subprocess.CompletedProcess[str]:
    code = _BLOCK_TORCH + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_the_blocker_blocks_torch():
    done = _run_without_torch("import torch\n")
    assert done.returncode != 0 and "torch is blocked" in done.stderr


def test_cost_model_and_profiles_import_and_judge_without_torch():
    done = _run_without_torch(
        """
        from natv2.device_profiles import Costs, list_profiles, load_profile
        from natv2.profiling.cost import cheapest_costs, subnet_cost
        from natv2.space import SearchSpace
        from natv2.supernet.config import config_for_encoding

        space = SearchSpace("exits+parallel")
        config = config_for_encoding("exits+parallel", preset="tiny", width=1.0)
        profile = load_profile("microcontroller-profile")
        cost = subnet_cost(space.minimal(), config, profile.dtype)
        figures = {**cost.as_dict(), "latency_ms": profile.estimate_latency_ms(cost.macs)}
        verdict = profile.judge(Costs.of(figures))
        assert verdict.fits and not verdict.unchecked, verdict
        assert cheapest_costs(space, config, "int8")["macs"] <= cost.macs
        assert len(list_profiles()) >= 5
        assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        print("costed", cost.macs)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("costed ")
