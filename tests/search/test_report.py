from mnist_search.search.report import pareto_front


def test_pareto_front_keeps_only_undominated_points():
    points = [(5000, 99.0), (6000, 98.9), (7000, 99.3), (7000, 99.1), (8000, 99.3), (4000, 98.5)]
    assert pareto_front(points) == [(4000, 98.5), (5000, 99.0), (7000, 99.3)]
