"""The figure parser and each verdict rule on hand-made values (both sides of every boundary)."""

import pytest

from moelab.claims.rules import (
    APPROX,
    ARITH_RANGE,
    CONFIRMED,
    CONTRADICTED,
    EXACT,
    INTERVAL,
    MODELLED_CHANGE,
    MODELLED_RANGE,
    NOT_REPRODUCIBLE,
    OUT,
    OUT_OF_SCOPE,
    PAIRED,
    ROUNDED,
    SIGN,
    Above,
    AtMost,
    Check,
    Within,
    parse_number,
    parse_range,
    quoted,
)


@pytest.mark.parametrize("token, value", [
    ("46.7 billion", 46.7), ("~13 billion", 13), ("$110,592", 110592), ("2.4e24", 2.4e24), ("+50%", 50),
    ("-25%", -25), ("4096×8", 32768), ("eight", 8), ("one GPU", 1), ("Single GPU", 1), ("half", 0.5),
    ("≈ 4.3 billion", 4.3), ("+ 1", 1), ("= 28", 28), ("α ≈ 0.076", 0.076), ("$0.32", 0.32), ("27,648", 27648),
])
def test_parse_number(token, value):
    assert parse_number(token) == value


def test_parse_range_and_refusals():
    assert parse_range("1.5–1.9×") == (1.5, 1.9)
    assert parse_range("2-3ms") == (2, 3)
    assert parse_range("10-50ms") == (10, 50)
    with pytest.raises(ValueError):
        parse_number("no figure here")
    with pytest.raises(ValueError):
        parse_range("12ms")
    with pytest.raises(ValueError):
        quoted("13B", "only 12B here")


def c(*values, **kw):
    return Check(values[0], "", values=values if len(values) > 1 else (), **kw)


def test_relative_tolerances():
    assert ROUNDED.judge(46.7, c(46.703)) == CONFIRMED
    assert ROUNDED.judge(100.0, c(105.0)) == CONFIRMED and ROUNDED.judge(100.0, c(105.1)) == CONTRADICTED
    assert ROUNDED.judge(100.0, c(94.9)) == CONTRADICTED
    assert APPROX.judge(950.0, c(1045.0)) == CONFIRMED and APPROX.judge(950.0, c(1091.0)) == CONTRADICTED
    assert ROUNDED.judge(4.3e9, c(409_663_695_276_000)) == CONTRADICTED
    # every value must hold: one at batch 1 inside, one at batch 32 outside
    assert ROUNDED.judge(0.5, c(0.5, 1.28)) == CONTRADICTED and ROUNDED.judge(0.5, c(0.5, 0.51)) == CONFIRMED
    assert Within("", 0.01, 1.0).judge(None, c(1.005)) == CONFIRMED
    assert Within("", 0.01, 1.0).judge(None, c(1.02)) == CONTRADICTED


def test_exact_and_thresholds():
    assert EXACT.judge(28, c(28)) == CONFIRMED and EXACT.judge(8, c(4)) == CONTRADICTED
    assert Above("").judge((1, 4), c(321)) == CONFIRMED and Above("").judge((1, 4), c(4)) == CONTRADICTED
    assert Above("", 1.0).judge(None, c(1.5, 0.99)) == CONTRADICTED
    assert AtMost("").judge(32, c(32)) == CONFIRMED and AtMost("").judge(32, c(33)) == CONTRADICTED


def test_ranges_and_changes():
    assert MODELLED_RANGE.judge((2, 3), c(3.9)) == CONFIRMED  # 3 * 1.3
    assert MODELLED_RANGE.judge((2, 3), c(3.91)) == CONTRADICTED
    assert MODELLED_RANGE.judge((1.5, 1.9), c(1.82, 0.80)) == CONTRADICTED
    assert ARITH_RANGE.judge((5, 15), c(4.3, 13.7)) == CONTRADICTED
    assert ARITH_RANGE.judge((5, 15), c(5.0, 15.0)) == CONFIRMED
    assert MODELLED_CHANGE.judge(50, c(42)) == CONFIRMED  # 1.42 / 1.50
    assert MODELLED_CHANGE.judge(58, c(-71)) == CONTRADICTED  # 0.29 / 1.58


def test_sign_with_noise():
    assert SIGN.judge(-25, c(-16.7, noise=8.3)) == CONFIRMED
    assert SIGN.judge(-25, c(-5.0, noise=8.3)) == NOT_REPRODUCIBLE
    assert SIGN.judge(-25, c(9.0, noise=8.3)) == CONTRADICTED
    assert SIGN.judge(87, c(-0.5, noise=10)) == NOT_REPRODUCIBLE
    # an interval per value (Newcombe's, asymmetric) replaces the noise
    assert SIGN.judge(30, c(5.0, cis=((0.5, 12.0),))) == CONFIRMED
    assert SIGN.judge(30, c(5.0, cis=((-0.5, 12.0),))) == NOT_REPRODUCIBLE
    assert SIGN.judge(30, c(-5.0, cis=((-12.0, -0.5),))) == CONTRADICTED
    assert SIGN.judge(-30, c(-5.0, cis=((-12.0, -0.5),))) == CONFIRMED


def test_paired():
    assert PAIRED.judge(None, c(5.0, discordant=(10, 0))) == CONFIRMED
    assert PAIRED.judge(None, c(0.0, discordant=(3, 3))) == CONFIRMED
    assert PAIRED.judge(None, c(-1.0, discordant=(0, 2))) == NOT_REPRODUCIBLE  # p = 0.5
    assert PAIRED.judge(None, c(-3.0, discordant=(0, 6))) == CONTRADICTED  # p = 2 / 64
    assert PAIRED.judge(None, c(-2.5, discordant=(0, 5))) == NOT_REPRODUCIBLE  # p = 2 / 32 > 0.05
    assert PAIRED.judge(None, c(1.0)) == NOT_REPRODUCIBLE


def test_interval_and_fixed():
    assert INTERVAL.judge(0.076, Check(0.08, "", interval=(0.05, 0.11))) == CONFIRMED
    assert INTERVAL.judge(0.076, Check(0.2, "", interval=(0.15, 0.25))) == CONTRADICTED
    assert INTERVAL.judge(0.076, Check(0.2, "")) == NOT_REPRODUCIBLE
    assert INTERVAL.judge(0.076, Check(0.05, "", interval=(0.001, 3.0))) == NOT_REPRODUCIBLE  # holds anything
    assert INTERVAL.judge(0.076, Check(0.05, "", interval=(0.03, 0.09))) == CONFIRMED  # a factor 3: informative
    assert INTERVAL.judge(0.076, Check(0.05, "", interval=(0.029, 0.09))) == NOT_REPRODUCIBLE
    assert INTERVAL.judge(0.076, Check(0.0, "", interval=(-0.02, 0.3))) == NOT_REPRODUCIBLE  # spans zero
    assert INTERVAL.judge(0.076, Check(-0.03, "", interval=(-0.04, -0.02))) == CONTRADICTED
    assert OUT.judge(None, Check(None, "")) == OUT_OF_SCOPE
