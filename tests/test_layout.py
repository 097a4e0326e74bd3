from batchpredict import layout


def test_errors_stats_lines_do_not_depend_on_counting_order():
    a = {"b failed": 1, "a failed": 1, "c failed": 3}
    b = {"c failed": 3, "a failed": 1, "b failed": 1}
    assert layout.errors_stats_lines(a) == layout.errors_stats_lines(b)
    assert layout.errors_stats_lines(a) == ("('c failed', 3)\n('a failed', 1)\n('b failed', 1)\n")
