"""The retry budget shared by retries and hedges."""

from __future__ import annotations

from resilience.budget import Budget
from resilience.config import BudgetConfig
from resilience.testing import FakeClock


def test_refuses_once_spent() -> None:
    """With no floor, 10 requests at 20% pay for exactly 2 retries; the third is refused."""
    budget = Budget(BudgetConfig(token_ratio=0.2, min_per_second=0.0), FakeClock())
    for _ in range(10):
        budget.deposit()
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    assert budget.balance < 1.0


def test_floor_allows_a_few_retries_without_traffic() -> None:
    """The per-second floor lets a quiet client retry min_per_second * ttl times."""
    budget = Budget(BudgetConfig(token_ratio=0.2, min_per_second=1.0, ttl=3.0), FakeClock())
    assert [budget.try_withdraw() for _ in range(4)] == [True, True, True, False]


async def test_deposits_expire_after_ttl() -> None:
    """Deposits older than ttl no longer pay for retries."""
    clock = FakeClock()
    budget = Budget(BudgetConfig(token_ratio=0.5, min_per_second=0.0, ttl=2.0), clock)
    for _ in range(4):
        budget.deposit()
    assert budget.balance == 2.0
    await clock.advance(3.0)
    assert budget.balance == 0.0
    assert not budget.try_withdraw()


def test_disabled_budget_always_allows() -> None:
    """A budget switched off never refuses."""
    budget = Budget(BudgetConfig(enabled=False, min_per_second=0.0), FakeClock())
    assert all(budget.try_withdraw() for _ in range(100))
