"""The authors' Random(42) split (docs/protocol.md §2): check values computed with the authors' code."""
import pytest

from medvit.data import authors_split


@pytest.mark.parametrize("n, val_size, first_val, first_test, sizes", [
    (3662, 0.3, [2791, 2171, 1708, 2071, 1406], [1490, 1713, 2516, 2279, 252], (2564, 549, 549)),  # APTOS2019
    (25331, 0.2, [19993, 22352, 7, 6495, 15314], [10529, 9719, 8588, 10447, 16931], (20265, 2533, 2533)),  # ISIC2019
])
def test_split_matches_authors_first_indices_and_sizes(n, val_size, first_val, first_test, sizes):
    split = authors_split(n, val_size)
    assert split["val"][:5] == first_val
    assert split["test"][:5] == first_test
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == sizes


@pytest.mark.parametrize("n, val_size", [(3662, 0.3), (25331, 0.2), (7, 0.5)])
def test_split_is_disjoint_and_covers_every_row(n, val_size):
    split = authors_split(n, val_size)
    rows = split["train"] + split["val"] + split["test"]
    assert len(rows) == n
    assert sorted(rows) == list(range(n))


def test_split_is_the_same_on_every_call():
    assert authors_split(3662, 0.3) == authors_split(3662, 0.3)


@pytest.mark.parametrize("val_size", [0, 1, -0.1, 1.5])
def test_split_rejects_val_size_outside_0_1(val_size):
    with pytest.raises(ValueError, match="val_size"):
        authors_split(10, val_size)
