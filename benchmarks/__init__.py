"""fastclv's benchmark suite (not collected by the test run): ``make bench``, see RESULTS.md."""
