"""``tilt rollouts merge`` (training.tools.merge_rollouts): two runs over consecutive prompt
files become one rollouts.pt with the group convention of collect_rollouts (trajectories:
group = prompt; branch groups after all prompts, distinct)."""

from dataclasses import asdict
from pathlib import Path

import torch
from typer.testing import CliRunner

from tilt.cli import app
from training.rollouts import Rollout


def merge(*args: str | Path):
    return CliRunner().invoke(app, ["rollouts", "merge", *map(str, args)])


def run_file(path: Path, n_prompts: int) -> None:
    """Per prompt: one trajectory (group = prompt) and one branch group of two rollouts."""
    rs = []
    for p in range(n_prompts):
        rs.append(Rollout(p, [1, 2], True, group=p, start=0, reward=0.5))
        rs += [Rollout(p, [1, 3], True, group=n_prompts + p, start=1, reward=0.1)] * 2
    torch.save({"rollouts": [asdict(r) for r in rs], "config": {"seed": 0}}, path)


def test_merged_rollouts_shift_prompts_and_keep_groups_distinct(tmp_path):
    run_file(tmp_path / "a.pt", 3)
    run_file(tmp_path / "b.pt", 2)
    out = tmp_path / "m" / "rollouts.pt"
    result = merge(tmp_path / "a.pt", 3, tmp_path / "b.pt", 2, out)
    assert result.exit_code == 0, result.output
    rs = [Rollout(**r) for r in torch.load(out, weights_only=False)["rollouts"]]
    assert sorted({r.prompt for r in rs}) == [0, 1, 2, 3, 4]
    trajectories = [r for r in rs if r.start == 0]
    assert all(r.group == r.prompt for r in trajectories)
    branch_groups = {r.group: r.prompt for r in rs if r.start > 0}
    assert sorted(branch_groups) == [5, 6, 7, 8, 9]          # one per prompt, after all prompts
    assert sorted(branch_groups.values()) == [0, 1, 2, 3, 4]  # and each stays with its prompt


def test_a_prompt_count_too_small_exits_2(tmp_path):
    run_file(tmp_path / "a.pt", 3)
    result = merge(tmp_path / "a.pt", 2, tmp_path / "a.pt", 3, tmp_path / "o.pt")
    assert result.exit_code == 2 and "prompt index 2, not below 2" in result.stderr
    assert not (tmp_path / "o.pt").exists()
