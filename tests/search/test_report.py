from mnist_search.search.report import pareto_front, zoom


def test_pareto_front_keeps_only_undominated_points():
    points = [(5000, 99.0), (6000, 98.9), (7000, 99.3), (7000, 99.1), (8000, 99.3), (4000, 98.5)]
    assert pareto_front(points) == [(4000, 98.5), (5000, 99.0), (7000, 99.3)]


def test_zoom_shows_two_points_below_the_best_and_counts_the_rest():
    assert zoom([99.3, 98.0, 11.35, 97.2], marked=[99.5]) == (97.5, 99.5, 2)
    assert zoom([99.3, 98.9], marked=[]) == (98.9, 99.3, 0)  # nothing hidden: the range is the data's
