"""Progress bars: what the kernel reports is what the pipeline's terminal shows."""
import io

from datadream_lib import progress


def test_a_bar_reported_through_its_file_is_shown_started_and_finished():
    out = io.StringIO()
    with progress.Follower("[pipeline] adaptation: ", out=out, poll=0.05) as follower:
        assert follower.path.exists()
        bar = progress.bar(total=7, desc="adapt dset", unit="step")
        for _ in range(7):
            bar.update()
        bar.close()
        hidden = progress.bar(total=3, desc="hidden", disable=True)  # a disabled bar reports nothing
        hidden.update(3)
        hidden.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[pipeline] adaptation: adapt dset: 0/7 step"
    assert lines[-1].startswith("[pipeline] adaptation: adapt dset: 7/7 step, ") and "done in" in lines[-1]
    assert not any("hidden" in line for line in lines)
    assert not follower.path.exists() and progress.PROGRESS_FILE not in __import__("os").environ


def test_describe_gives_rate_and_time_left():
    line = progress.describe({"desc": "synthesis shard 0/1", "n": 100, "total": 500, "unit": "image", "elapsed": 50})
    assert line == "synthesis shard 0/1: 100/500 image, 2 image/s, 3 min 20 s left"
