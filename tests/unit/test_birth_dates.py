"""Dates of birth relative to today: every ``today`` here is derived from the clock, never a calendar
constant that the real date will overtake."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.pii.birth_dates import _scan_date_of_birth
from gateway.pii.text import _Text


def years_from_now(years: int) -> date:
    """Today's date ``years`` from now (June 1st: every year has one)."""
    return date(date.today().year + years, 6, 1)


def births(text: str, today: date | None = None) -> list[str]:
    return [finding.value for finding in _scan_date_of_birth(_Text(text), today=today)]


def first_century_year_after_now(*, leap: bool) -> int:
    """The first year ending in 00 after this one that is (or is not) a leap year."""
    year = (date.today().year // 100 + 1) * 100
    while (year % 400 == 0) != leap:
        year += 100
    return year


@pytest.mark.parametrize("years", [40, 80])
def test_birth_dates_after_2030_count_once_today_is_past_them(years: int) -> None:
    today = years_from_now(years)
    assert births(f"DOB: {today.year - 5}-03-12", today) == [f"{today.year - 5}-03-12"]
    assert births(f"born on 12 March {today.year}", today) == [f"12 March {today.year}"]


@pytest.mark.parametrize("years", [-30, -60])
def test_birth_dates_in_years_still_to_come_are_not_births(years: int) -> None:
    today = years_from_now(years)
    assert births(f"DOB: {today.year + 2}-03-12", today) == []
    assert births(f"born on 12 March {today.year + 1}", today) == []


def test_birth_dates_before_1900_count_for_someone_alive_then() -> None:
    today = years_from_now(-40)
    assert births(f"born on 12 March {today.year - 100}", today) == [f"12 March {today.year - 100}"]


def test_birth_dates_past_the_oldest_age_are_not_births() -> None:
    today = years_from_now(40)
    assert births(f"born on 12 March {today.year - 140}", today) == []


@pytest.mark.parametrize(("leap", "found"), [(True, ["29/02/00"]), (False, [])])
def test_birth_dates_two_digit_year_is_the_latest_such_year_up_to_today(leap: bool, found: list[str]) -> None:
    # "00" is 2000 only while 2000 is the latest year ending in 00: in a century year that is not a
    # leap year (2100), 29 February does not exist
    today = date(first_century_year_after_now(leap=leap) + 5, 6, 1)
    assert births("DOB 29/02/00", today) == found


def test_birth_dates_default_to_the_clock() -> None:
    this_year = date.today().year
    assert births(f"DOB: {this_year - 30}-01-15") == [f"{this_year - 30}-01-15"]
    assert births(f"DOB: {this_year + 2}-01-15") == []
