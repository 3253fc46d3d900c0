"""`make soak` within 60 minutes (issue 17): the parts' budgets add up to at most an hour,
the kill parts (run side by side, tests/soak/run.py side_by_side) counted once."""
from tests.soak import run


def test_budgets_fit_an_hour():
    kill = max(run.BUDGET[p] for p in run.KILL_PARTS)
    others = sum(b for p, b in run.BUDGET.items() if p not in run.KILL_PARTS)
    assert set(run.BUDGET) == set(run.PARTS) == set(run.COUNTS)
    assert kill + others <= 3600, (kill, others)


def test_the_concurrent_clients_fit_their_budget():
    """The concurrent part runs its clients for a count of seconds, not to a budget."""
    assert run.COUNTS["concurrent"][0] < run.BUDGET["concurrent"]


def test_two_hundred_kills_of_each():
    assert all(run.COUNTS[p][0] == 200 for p in run.KILL_PARTS)


def test_the_full_run_puts_the_kill_parts_side_by_side(monkeypatch, tmp_path):
    """Each on an appliance of its own: side_by_side gets all three, the rest one by one."""
    calls: dict[str, list] = {"together": [], "alone": []}

    def together(parts, base, count_of, budget_of, facts):
        calls["together"].append(list(parts))
        return {p: {"kills": count_of(p), "survived": count_of(p)} for p in parts}

    monkeypatch.setattr(run, "side_by_side", together)
    monkeypatch.setattr(run, "cache_bytecode", lambda: None)  # this process's environment stays
    monkeypatch.setattr(run.signal, "signal", lambda *args: None)  # and pytest's SIGTERM handler
    monkeypatch.setattr(run, "machine", lambda: {"date_utc": "d", "commit": "c",
                                                 "uncommitted_in_measured_code": []})
    monkeypatch.setattr(run.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "base"))
    assert run.main(["--part", "kill", "--no-write"]) == 0
    assert calls["together"] == [list(run.KILL_PARTS)]
