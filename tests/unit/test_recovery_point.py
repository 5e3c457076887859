"""Unit tests for engine.replica.recovery_point: points, ordering, retention."""

from __future__ import annotations

import pytest

from engine.errors import (
    CorruptRecord,
    DamagedState,
    InvalidConfiguration,
    RecoveryPointNotFound,
)
from engine.replica.recovery_point import (
    RETENTION_COUNT_MAX,
    RecoveryPoint,
    RecoveryPointCatalogue,
    validate_retention_count,
)


def point(recovery_point_id: int, *, app_consistent: bool = False) -> RecoveryPoint:
    """A point whose cycle is ten times its id, created at 100 s per id."""
    return RecoveryPoint(
        recovery_point_id=recovery_point_id,
        cycle_id=10 * recovery_point_id,
        epoch=1,
        created_at=100.0 * recovery_point_id,
        app_consistent=app_consistent,
        last_sequences=(("data", recovery_point_id), ("os", 2 * recovery_point_id)),
    )


def catalogue_of(
    *ids: int, app_consistent: tuple[int, ...] = ()
) -> RecoveryPointCatalogue:
    catalogue = RecoveryPointCatalogue()
    for recovery_point_id in ids:
        catalogue = catalogue.with_point(
            point(recovery_point_id, app_consistent=recovery_point_id in app_consistent)
        )
    return catalogue


def test_points_are_kept_oldest_first() -> None:
    """Points appended in order are listed oldest first."""
    expected = (1, 2, 3)
    assert expected == catalogue_of(1, 2, 3).recovery_point_ids


def test_next_id_follows_the_high_water_mark() -> None:
    """The next id follows the newest id ever given, even after a discard."""
    expected = 4
    assert expected == catalogue_of(1, 2, 3).without_points().next_recovery_point_id()


def test_retention_keeps_the_newest_points() -> None:
    """Retention merges away the oldest points beyond the count."""
    catalogue = catalogue_of(1, 2, 3, 4, 5)
    expected = ((1, 2), (3, 4, 5))
    actual = (
        tuple(p.recovery_point_id for p in catalogue.merge_candidates(3)),
        catalogue.retained(3).recovery_point_ids,
    )
    assert expected == actual


def test_retention_within_the_count_merges_nothing() -> None:
    """Fewer points than the count are all kept."""
    expected = ()
    assert expected == catalogue_of(1, 2).merge_candidates(3)


def test_latest_and_latest_app_consistent() -> None:
    """latest() is the newest point; latest_app_consistent() the newest VSS one."""
    catalogue = catalogue_of(1, 2, 3, 4, app_consistent=(2,))
    expected = (4, 2)
    actual = (
        catalogue.latest().recovery_point_id,
        catalogue.latest_app_consistent().recovery_point_id,
    )
    assert expected == actual


def test_get_unknown_point_names_the_available_ids() -> None:
    """Looking up a missing id lists the ids there are."""
    with pytest.raises(RecoveryPointNotFound, match=r"available: \[2, 3\]"):
        catalogue_of(1, 2, 3).retained(2).get(1)


def test_latest_of_an_empty_catalogue_is_not_found() -> None:
    """An empty catalogue has no latest point."""
    with pytest.raises(RecoveryPointNotFound, match="empty"):
        RecoveryPointCatalogue().latest()


def test_no_app_consistent_point_lists_the_others() -> None:
    """Without an app-consistent point the crash-consistent ids are listed."""
    with pytest.raises(RecoveryPointNotFound, match=r"\[1, 2\]"):
        catalogue_of(1, 2).latest_app_consistent()


def test_newer_than_lists_newest_first() -> None:
    """newer_than() gives the points after an id, newest first."""
    expected = (4, 3)
    newer = catalogue_of(1, 2, 3, 4).newer_than(2)
    assert expected == tuple(p.recovery_point_id for p in newer)


def test_find_cycle() -> None:
    """find_cycle() returns the point a cycle made, or None."""
    catalogue = catalogue_of(1, 2)
    expected = (2, None)
    found = catalogue.find_cycle(20)
    actual = (
        None if found is None else found.recovery_point_id,
        catalogue.find_cycle(5),
    )
    assert expected == actual


def test_last_sequence_of_an_unknown_disk_names_the_disks() -> None:
    """Asking a point for an unknown disk lists its disks."""
    with pytest.raises(InvalidConfiguration, match=r"\['data', 'os'\]"):
        point(1).last_sequence("swap")


def test_json_round_trip() -> None:
    """A catalogue survives to_json/from_json unchanged."""
    catalogue = catalogue_of(1, 2, 3, app_consistent=(2,)).retained(2)
    assert catalogue == RecoveryPointCatalogue.from_json(catalogue.to_json())


@pytest.mark.parametrize(
    ("mutation", "match"),
    [
        ({"points": "nope"}, "must be a list"),
        ({"last_recovery_point_id": -1}, "last_recovery_point_id"),
        ({"last_recovery_point_id": 1}, "out of order"),
    ],
)
def test_damaged_catalogue_is_refused(mutation: dict[str, object], match: str) -> None:
    """A damaged catalogue document raises DamagedState naming the field (never
    CorruptRecord, which means a damaged change log)."""
    document = {**catalogue_of(1, 2).to_json(), **mutation}
    with pytest.raises(DamagedState, match=match) as raised:
        RecoveryPointCatalogue.from_json(document)
    assert not isinstance(raised.value, CorruptRecord)


def test_damaged_point_field_is_named() -> None:
    """A point with a non-boolean app_consistent is refused, naming the field."""
    row = point(1).to_json()
    row["app_consistent"] = "yes"
    with pytest.raises(DamagedState, match="app_consistent"):
        RecoveryPoint.from_json(row)


@pytest.mark.parametrize("value", [0, -1, RETENTION_COUNT_MAX + 1, True, "3", 2.0])
def test_retention_count_is_validated(value: object) -> None:
    """A retention count outside 1..max or not an int is refused."""
    with pytest.raises(InvalidConfiguration, match="retention_count="):
        validate_retention_count(value)
