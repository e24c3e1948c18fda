"""Any input file gives exit 0, 1 or 2 with a clear message: never a traceback.

Hypothesis mutates a valid scenario (insertions of arbitrary text, deletions, value
swaps) and also generates structurally valid TOML with wrong types and values."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.scenario import ScenarioError, parse_scenario
from neverstop.cli import main

VALID = Path("scenarios/vm-crash-shared.toml").read_text()
FUZZ_SETTINGS = settings(max_examples=150, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _check_parse(text: str) -> None:
    try:
        parse_scenario(text, "fuzz.toml")
    except ScenarioError as err:
        message = str(err)
        assert message.startswith("fuzz.toml: ") and "\n" not in message


@FUZZ_SETTINGS
@given(at=st.integers(0, len(VALID)), cut=st.integers(0, 40), insert=st.text(max_size=30))
def test_mutated_file_parses_or_fails_cleanly(at: int, cut: int, insert: str) -> None:
    _check_parse(VALID[:at] + insert + VALID[at + cut:])


TOML_SCALARS = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.text(max_size=12), st.sampled_from(["5m", "0s", "-1s", "1GiB", "x"]))


@FUZZ_SETTINGS
@given(key=st.sampled_from(["duration", "seed", "profile", "cpu", "memory", "at", "host", "ha", "state",
                            "within", "after", "loss", "rate", "network", "direction", "no_restart", "pool"]),
       value=TOML_SCALARS, occurrence=st.integers(0, 3))
def test_wrong_values_fail_cleanly(key: str, value: object, occurrence: int) -> None:
    import json

    lines = VALID.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{key} = ")]
    literal = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
    if hits:
        lines[hits[occurrence % len(hits)]] = f"{key} = {literal}"
    else:
        lines.insert(len(lines) // 2, f"{key} = {literal}")
    _check_parse("\n".join(lines) + "\n")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, len(VALID)), insert=st.text(max_size=20))
def test_cli_exit_codes_on_mutated_files(tmp_path_factory: object, at: int, insert: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.toml"
        path.write_text(VALID[:at] + insert + VALID[at:])
        assert main(["sim", "validate", str(path)]) in (0, 2)
        assert main(["sim", "run", "-q", str(path)]) in (0, 1, 2)


@settings(max_examples=60, deadline=None)
@given(argv=st.lists(st.sampled_from(["sim", "run", "validate", "fuzz", "--seeds", "-1", "0", "x", "--jobs",
                                      "--profile", "tuned", "--seed", "--json", "--plot", "--strategy",
                                      "Force", "--cluster", "nope", "-q", "--help-me"]), max_size=6))
def test_cli_argument_soup_never_crashes(argv: list[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:  # --help prints and exits 0 by argparse's design
        code = int(exit_.code or 0)
    assert code in (0, 1, 2)
