import pytest

from specialize.data.curate import (
    NearDuplicateIndex,
    dedup_key,
    find_pii,
    mask_pii,
    normalise_text,
    quality_problem,
    repetition_ratio,
)


def test_normalise_text():
    assert (
        normalise_text("  Cafe\u0301\u200b  au\t\tlait \r\n\r\n\r\n\nok ") == "Café au lait\n\nok"
    )


def test_exact_key_ignores_case_and_spacing():
    assert dedup_key("Hello   World") == dedup_key("hello world ") != dedup_key("hello world!")


def test_near_duplicates_found_and_distinct_rows_not():
    index = NearDuplicateIndex(threshold=0.8)
    index.add("a", "How do I order a new debit card from Nordvik Bank when mine has expired?")
    assert (
        index.query("How do I order a new debit card from Nordvik Bank when mine has expired ?!")
        == "a"
    )
    assert index.query("What is the interest rate on a fixed three year mortgage?") is None


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("mail anna.svensson@example.se now", ["email"]),
        ("call +46 70 123 45 67", ["phone"]),
        ("call 070-123 45 67 tonight", ["phone"]),
        ("IBAN SE45 5000 0000 0583 9825 7466", ["iban"]),
        ("card 4111 1111 1111 1111 exp", ["card"]),
        ("the fee is 1500 SEK in 2024, ref 12345", []),
        ("card 4111 1111 1111 1112", []),  # fails Luhn
    ],
)
def test_personal_data(text, kinds):
    assert [k for k, _ in find_pii(text)] == kinds


def test_mask_pii():
    assert mask_pii("write to a@b.se or +46 70 123 45 67") == "write to [EMAIL] or [PHONE]"


def test_quality_filters():
    short = {"messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "k"}]}
    assert quality_problem(short, min_answer_chars=2, max_repetition=0.5)[0] == "short_answer"
    loop = {"text": "buy now " * 40}
    assert repetition_ratio(loop["text"]) > 0.9
    assert quality_problem(loop, min_answer_chars=2, max_repetition=0.5)[0] == "repetitive"
    fine = {
        "messages": [
            {"role": "user", "content": "q?"},
            {"role": "assistant", "content": "A full answer here."},
        ]
    }
    assert quality_problem(fine, min_answer_chars=2, max_repetition=0.5) is None


@pytest.mark.parametrize(
    ("text", "hits"),
    [
        ("personnummer 811228-9874 tack", [("national_id", "se.personnummer")]),
        ("personnummer 19811228-9874", [("national_id", "se.personnummer")]),
        ("personnummer 811228-9873", [("phone", "")]),  # bad check digit: only a number shape
        ("fødselsnummer 151086 95088", [("national_id", "no.fodselsnummer")]),
        ("henkilötunnus 131052-308T", [("national_id", "fi.hetu")]),
        ("SSN 536-90-4399", [("national_id", "us.ssn")]),
        ("ring 08-123 456 78 idag", [("phone", "phone:SE")]),
        ("on 2023-11-15 and 15.11.2023, order 20231115123456", []),
    ],
)
def test_national_ids_and_phones_by_region(text, hits):
    from specialize.data.curate import pii_hits

    found, _ = pii_hits(text)
    assert [(h.kind, h.detail) for h in found] == hits


def test_names_are_an_optional_detector():
    from specialize.data.curate import PiiOptions, mask_pii

    text = "Anna Svensson called Dr. Berg about the loan; Bergen Bank replied."
    assert mask_pii(text) == text  # off by default
    masked = mask_pii(text, PiiOptions(names=True))
    assert masked == "[NAME] called [NAME] about the loan; Bergen Bank replied."


def test_phone_regions_limit_national_formats():
    from specialize.data.curate import PiiOptions, pii_hits

    # a London number; valid in Finland's format too, so the first listed region that fits wins
    found, _ = pii_hits("call 020 7946 0958", PiiOptions(phone_regions=("GB", "FI")))
    assert [(h.kind, h.detail) for h in found] == [("phone", "phone:GB")]
    found, _ = pii_hits("call 020 7946 0958", PiiOptions(phone_regions=("SE",)))
    assert [(h.kind, h.detail) for h in found] == [("phone", "")]  # only the shape matched
