from batchpredict import layout


def test_errors_stats_lines_do_not_depend_on_counting_order():
    a = {"b failed": 1, "a failed": 1, "c failed": 3}
    b = {"c failed": 3, "a failed": 1, "b failed": 1}
    assert layout.errors_stats_lines(a) == layout.errors_stats_lines(b)
    assert layout.errors_stats_lines(a) == ("('c failed', 3)\n('a failed', 1)\n('b failed', 1)\n")


def test_errors_stats_keeps_the_most_frequent_causes_and_counts_the_rest_on_one_line():
    counts = {f"cause {i:03d}": 1000 - i for i in range(150)}
    counts[layout.OTHER_ERRORS_CAUSE] = 7  # failures a worker counted beyond its own bound
    lines = layout.errors_stats_lines(counts).splitlines()
    assert len(lines) == layout.MAX_ERRORS_STATS_LINES + 1
    assert lines[0] == "('cause 000', 1000)"
    assert lines[-2] == f"('cause {layout.MAX_ERRORS_STATS_LINES - 1:03d}', 901)"
    rest = sum(1000 - i for i in range(layout.MAX_ERRORS_STATS_LINES, 150)) + 7
    assert lines[-1] == repr((layout.OTHER_ERRORS_CAUSE, rest))  # last, whatever its count
    assert layout.errors_stats_lines({"a": 2, "b": 1}, limit=1) == (
        f"('a', 2)\n{(layout.OTHER_ERRORS_CAUSE, 1)!r}\n"
    )


def test_an_error_cause_drops_instance_values_and_keeps_counts_and_words():
    from batchpredict.errors import error_cause

    cases = {
        "ValueError: could not convert string to float: 'n/a'": (
            "ValueError: could not convert string to float: <value>"
        ),
        'KeyError: "it\'s missing"': "KeyError: <value>",
        "ValueError: X has 3 features, but StandardScaler is expecting 28 features as input.": (
            "ValueError: X has 3 features, but StandardScaler is expecting 28 features as input."
        ),
        "IndexError: index 12345 is out of bounds for axis 0 with size 28": (
            "IndexError: index <number> is out of bounds for axis 0 with size 28"
        ),
        "ValueError: bad score -1.5e-07 for <Row object at 0x7f3a9c>": (
            "ValueError: bad score <number> for <Row object at <number>>"
        ),
        "ValueError: dtype='numeric' is not compatible, nor dtype('float64'), with 'x'": (
            "ValueError: dtype='numeric' is not compatible, nor dtype('float64'), with <value>"
        ),
        "RuntimeError: the model's input isn't ready": (
            "RuntimeError: the model's input isn't ready"
        ),
    }
    for message, cause in cases.items():
        assert error_cause(message) == cause
    assert len(error_cause("ValueError: " + "x" * 5000)) == 500
