import pytest

from mnist_search.search.report import pareto_front, zoom


def test_pareto_front_keeps_only_undominated_points():
    points = [(5000, 99.0), (6000, 98.9), (7000, 99.3), (7000, 99.1), (8000, 99.3), (4000, 98.5)]
    assert pareto_front(points) == [(4000, 98.5), (5000, 99.0), (7000, 99.3)]


def test_zoom_shows_two_points_below_the_best_trial_and_every_marked_point():
    bottom, top, hidden = zoom([99.3, 98.0, 11.35, 97.2], marked=[99.5])
    assert (bottom, top, hidden) == (pytest.approx(97.3), 99.5, 2)
    # A small budget's trials all sit far below the seed networks: they are still shown.
    assert zoom([95.0, 94.0], marked=[99.5]) == (94.0, 99.5, 0)
    # A confirmation below the trials' range widens it rather than being cut off.
    assert zoom([99.3, 96.0], marked=[97.0]) == (97.0, 99.3, 1)
