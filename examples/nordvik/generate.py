"""Generate the Nordvik Bank example data: policy questions and structured replies, split so that
no test question is ever seen in training.

    python examples/nordvik/generate.py [--seed 7] [--out examples/nordvik/data]

Two tasks, one chat format:
  policy      a customer asks about a rule written in docs/*.md; the answer is a short fact.
              Each fact has four phrasings: two for train, one for val, one for test. A third of
              the facts (chosen by the seed) never appear in train at all: those are answerable
              only from the documents, as when the knowledge base changes after training.
  structured  a customer message -> Nordvik's JSON reply: a category from the bank's taxonomy, a
              priority, and a reply in the house style (Swedish greeting and sign-off, one fixed
              instruction per category). Each category has six message templates: four for
              train, one for val, one for test, so test messages are held-out paraphrases.

Eval files carry the task name in `category`, and policy items say whether their fact was
trained (`fact: trained|docs-only`), so a report can separate what tuning could have learnt.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICY_SYSTEM = "You are Nordvik Bank's support assistant. Answer the customer's question briefly."
STRUCTURED_SYSTEM = "You are Nordvik Bank's support assistant. Reply to the customer message in Nordvik's JSON format."
SIGN_OFF = "Vänliga hälsningar, Nordvik Kundservice"

# (fact id, document, accepted answers, answer sentence, four phrasings: train, train, val, test)
FACTS = [
    (
        "everyday_fee",
        "fees",
        ["25 SEK"],
        "The Everyday account costs 25 SEK a month when no salary is paid into it.",
        [
            "How much is the monthly fee for the Everyday account if my salary isn't paid into it?",
            "What does the Everyday account cost per month without a salary deposit?",
            "My wages go to another bank. What is the monthly charge for an Everyday account?",
            "I don't get my salary into Nordvik. What will the Everyday account cost me each month?",
        ],
    ),
    (
        "fx_surcharge",
        "fees",
        ["1.5 %", "1.5%"],
        "Card payments in other currencies carry a 1.5 % surcharge on the Nordvik reference rate.",
        [
            "What is the surcharge when I pay by card in a foreign currency?",
            "How much extra do I pay for card purchases in euros or dollars?",
            "Is there a currency fee on card payments abroad, and how big is it?",
            "Paying with my card in another currency, what percentage do you add?",
        ],
    ),
    (
        "intl_transfer",
        "fees",
        ["50 SEK"],
        "An international transfer outside the EU/EEA costs 50 SEK.",
        [
            "What does an international transfer outside the EU cost?",
            "How much is the fee to send money to a country outside the EU/EEA?",
            "I need to send money to the USA. What is the transfer fee?",
            "What do you charge for a transfer to a bank outside the EEA?",
        ],
    ),
    (
        "express_transfer",
        "fees",
        ["150 SEK"],
        "An express transfer arrives the same day and costs 150 SEK.",
        [
            "How much does an express transfer cost?",
            "What is the price of a same-day transfer?",
            "What is the fee if I want my payment to arrive today?",
            "I want the money to reach the recipient the same day. What does that cost?",
        ],
    ),
    (
        "atm_abroad",
        "fees",
        ["30 SEK"],
        "Each cash withdrawal abroad costs 30 SEK.",
        [
            "What does it cost to withdraw cash abroad?",
            "Is there a fee for using an ATM outside Sweden?",
            "How much is each cash withdrawal when I'm travelling abroad?",
            "If I take out money from a cash machine in Spain, what will you charge?",
        ],
    ),
    (
        "fx_rate_time",
        "fees",
        ["09:00"],
        "The Nordvik reference rate is published every banking day at 09:00.",
        [
            "When is the Nordvik reference rate published?",
            "At what time do you publish the daily reference exchange rate?",
            "What time of day is the new reference rate out?",
            "When each banking day does the Nordvik exchange reference rate come out?",
        ],
    ),
    (
        "replacement_card",
        "cards",
        ["five working days", "5 working days"],
        "A replacement card arrives by post within five working days.",
        [
            "How long does it take to get a replacement card?",
            "When will my new card arrive after I blocked the old one?",
            "After blocking my card, how soon is the new one delivered?",
            "How many days until a replacement for my blocked card reaches me?",
        ],
    ),
    (
        "emergency_card",
        "cards",
        ["300 SEK"],
        "An emergency card abroad costs 300 SEK and arrives within three days.",
        [
            "What does an emergency card abroad cost?",
            "How much is the fee for an emergency card when I'm travelling?",
            "I lost my card on holiday abroad. What does a card sent to me there cost?",
            "What is the price of ordering an emergency card outside Sweden?",
        ],
    ),
    (
        "purchase_limit",
        "cards",
        ["15,000 SEK", "15000 SEK"],
        "The standard daily card limit for purchases is 15,000 SEK.",
        [
            "What is the standard daily purchase limit on my card?",
            "How much can I spend with my card per day by default?",
            "What is the default limit for card purchases in one day?",
            "By default, how much may I pay by card in a single day?",
        ],
    ),
    (
        "cash_limit",
        "cards",
        ["5,000 SEK", "5000 SEK"],
        "The standard daily limit for cash withdrawals is 5,000 SEK.",
        [
            "What is the daily limit for cash withdrawals?",
            "How much cash can I take out per day with my card?",
            "What is the maximum I can withdraw from ATMs in one day?",
            "How much cash may I withdraw with my card in a single day?",
        ],
    ),
    (
        "app_limit",
        "cards",
        ["50,000 SEK", "50000 SEK"],
        "Limits up to 50,000 SEK are changed in the app at once; higher limits are reviewed by an adviser.",
        [
            "Up to what amount can I raise my card limit in the app myself?",
            "How high a card limit can I set in the app without an adviser?",
            "What is the highest card limit I can choose on my own in the app?",
            "Which card limit can I change instantly in the app, at most?",
        ],
    ),
    (
        "contactless",
        "cards",
        ["400 SEK"],
        "Contactless payments work up to 400 SEK without a PIN.",
        [
            "Up to what amount can I pay contactless without a PIN?",
            "What is the contactless limit on Nordvik cards?",
            "How much can I tap to pay before the terminal asks for my PIN?",
            "What is the most I can pay by tapping my card without entering the PIN?",
        ],
    ),
    (
        "savings_rate",
        "accounts",
        ["2.1 %", "2.1%"],
        "The Nordvik Savings account pays 2.1 % interest a year.",
        [
            "What interest does the Savings account pay?",
            "What is the interest rate on the Nordvik Savings account?",
            "How much interest do I earn on my savings account per year?",
            "What yearly rate does your Savings account give?",
        ],
    ),
    (
        "fixed_rate",
        "accounts",
        ["2.9 %", "2.9%"],
        "The Fixed Savings account pays 2.9 % for a one-year term.",
        [
            "What rate does the Fixed Savings account pay?",
            "What interest do I get on a one-year fixed savings account?",
            "If I lock my money in for a year, what interest do you pay?",
            "How much does Fixed Savings pay for a one-year term?",
        ],
    ),
    (
        "student_age",
        "accounts",
        ["26"],
        "Students under 26 get the Student account without a monthly fee.",
        [
            "Until what age can I have the Student account?",
            "What is the age limit for the free Student account?",
            "I'm a student. Up to which age is the Student account free?",
            "Below what age do students qualify for the Student account?",
        ],
    ),
    (
        "salary_time",
        "accounts",
        ["06:00"],
        "Salary from an employer that banks with Nordvik is available from 06:00 on pay day.",
        [
            "What time is my salary available on pay day?",
            "When on pay day can I use my salary if my employer banks with Nordvik?",
            "My employer is a Nordvik customer. From what time is my pay in my account?",
            "At what hour does salary from a Nordvik employer reach my account on pay day?",
        ],
    ),
    (
        "mortgage_ltv",
        "loans",
        ["85 %", "85%"],
        "A Nordvik mortgage covers at most 85 % of the property's value.",
        [
            "How much of the property's value can a mortgage cover?",
            "What is the maximum loan-to-value for a mortgage?",
            "What share of the home's price will you lend me at most?",
            "At most, what percentage of the property value can I borrow as a mortgage?",
        ],
    ),
    (
        "variable_rate",
        "loans",
        ["4.05 %", "4.05%"],
        "The variable mortgage rate is 4.05 %.",
        [
            "What is the variable mortgage rate?",
            "What is your current floating rate on mortgages?",
            "How high is the variable interest rate for a home loan?",
            "What rate do you charge on a mortgage with variable interest?",
        ],
    ),
    (
        "fixed3_rate",
        "loans",
        ["3.79 %", "3.79%"],
        "The three-year fixed mortgage rate is 3.79 %.",
        [
            "What is the three-year fixed mortgage rate?",
            "What rate do I get if I fix my mortgage for three years?",
            "How much is the interest on a mortgage fixed for 3 years?",
            "If I lock my home loan rate for three years, what is it?",
        ],
    ),
    (
        "mortgage_decision",
        "loans",
        ["two working days", "2 working days"],
        "A mortgage decision takes two working days once all documents are uploaded.",
        [
            "How long does a mortgage decision take?",
            "When will I get an answer on my mortgage application?",
            "How quickly do you decide on a home loan once I've uploaded everything?",
            "After uploading all documents, how long until the mortgage decision?",
        ],
    ),
    (
        "personal_loan_max",
        "loans",
        ["350,000 SEK", "350000 SEK"],
        "Personal loans range from 20,000 to 350,000 SEK.",
        [
            "What is the largest personal loan I can get?",
            "How much can I borrow at most with a personal loan?",
            "What is the maximum amount of a Nordvik personal loan?",
            "What's the upper limit for a personal loan?",
        ],
    ),
    (
        "extra_repayment",
        "loans",
        ["10 %", "10%"],
        "Extra mortgage repayments of up to 10 % of the loan a year are free.",
        [
            "How much extra can I pay off my mortgage each year without a fee?",
            "Can I make extra repayments on my mortgage for free, and how much?",
            "What share of my mortgage may I repay early per year at no cost?",
            "How large an additional yearly mortgage repayment is free of charge?",
        ],
    ),
    (
        "phone_hours",
        "procedures",
        ["08:00 to 20:00", "08:00-20:00", "8 to 20"],
        "Phone support is open from 08:00 to 20:00 on weekdays.",
        [
            "What are the opening hours of phone support on weekdays?",
            "When can I call customer service on a weekday?",
            "Between what times is your phone support open Monday to Friday?",
            "On weekdays, during which hours can I reach you by phone?",
        ],
    ),
    (
        "complaint_time",
        "procedures",
        ["10 working days", "ten working days"],
        "Every complaint receives a written answer within 10 working days.",
        [
            "How long does it take to get an answer to a complaint?",
            "When will I hear back after filing a complaint?",
            "How soon do you answer a written complaint?",
            "Within how many days will my complaint be answered?",
        ],
    ),
    (
        "dispute_window",
        "cards",
        ["13 months"],
        "An unrecognised card payment can be disputed in the app within 13 months of the purchase.",
        [
            "How long do I have to dispute a card payment I don't recognise?",
            "What is the time limit for disputing a card purchase?",
            "Until when after a purchase can I dispute it?",
            "How many months after an unknown card payment can I still dispute it?",
        ],
    ),
    (
        "address_change",
        "procedures",
        ["Profile > Address", "Profile, Address"],
        "A change of address is made in the Nordvik app under Profile > Address.",
        [
            "Where in the app do I change my address?",
            "How do I update my address with Nordvik?",
            "I've moved. Where do I register my new address in the app?",
            "Which menu in the app lets me change my home address?",
        ],
    ),
]

# category -> (priority, instruction in the house style, six message templates: 4 train, val, test)
# A lost card is "urgent" when the customer is abroad, otherwise "high": a rule the examples teach.
CATEGORIES = {
    "card_lost": (
        "high",
        "Block the card at once in the app under Cards > Block; a new card arrives within five working days.",
        [
            "I think I lost my card {place}. What should I do?",
            "My wallet was stolen {place} and my Nordvik card was in it.",
            "Can't find my debit card anywhere, I had it {place}.",
            "Someone took my card {place}, please help!",
            "My bank card has gone missing {place}.",
            "I dropped my card somewhere {place} and it's gone.",
        ],
    ),
    "fraud": (
        "urgent",
        "Block the card in the app and dispute the payment under Cards > Dispute; we will investigate within two days.",
        [
            "There is a payment of {amount} SEK to {merchant} that I never made.",
            "I see a charge from {merchant} for {amount} SEK that isn't mine.",
            "Someone used my card at {merchant}, {amount} SEK, it wasn't me!",
            "Unknown transaction: {merchant}, {amount} SEK. I did not buy anything there.",
            "My statement shows {amount} SEK at {merchant} and I have never shopped there.",
            "A purchase I don't recognise: {amount} SEK from {merchant}. What now?",
        ],
    ),
    "fees": (
        "low",
        "You can see every fee in the app under Accounts > Fees, and our price list is on nordvik.se.",
        [
            "Why was I charged {small} SEK on my account this month?",
            "What is the {small} SEK fee on my statement?",
            "I got a fee of {small} SEK and I don't understand why.",
            "Please explain the {small} SEK charge from last week.",
            "There's a {small} SEK deduction labelled fee. What is it for?",
            "You took {small} SEK from my account as a fee, why?",
        ],
    ),
    "transfer": (
        "normal",
        "Transfers are tracked in the app under Payments > Sent; if it has not arrived in two banking days we will trace it.",
        [
            "My transfer of {amount} SEK to {person} hasn't arrived.",
            "I sent {amount} SEK to {person} on Monday and they still don't have it.",
            "Where is my payment to {person}? It was {amount} SEK.",
            "The {amount} SEK I transferred to {person} is missing.",
            "{person} says my transfer of {amount} SEK never came through.",
            "I paid {person} {amount} SEK but the money has not shown up on their side.",
        ],
    ),
    "loan": (
        "normal",
        "You can apply in the app under Loans > Apply, and an adviser will contact you within two working days.",
        [
            "I'd like to borrow {amount} SEK for a new car.",
            "Can I get a loan of {amount} SEK to renovate my kitchen?",
            "What would a loan of {amount} SEK cost me?",
            "I'm looking to take a personal loan of {amount} SEK.",
            "Is it possible to borrow {amount} SEK from you for a boat?",
            "I need financing of about {amount} SEK. Do you offer loans?",
        ],
    ),
    "account": (
        "low",
        "You can open accounts in the app under Accounts > Open account, signing with BankID.",
        [
            "How do I open a savings account with you?",
            "I want to open a joint account with my partner.",
            "Can I get a second account for my holiday savings?",
            "I'd like to start a Student account.",
            "What do I need to open an account for my household budget?",
            "Please help me set up an additional account.",
        ],
    ),
    "login": (
        "high",
        "Update the Nordvik app and BankID and try again; if it still fails, call us on +46 8 000 00 00.",
        [
            "I can't log in to the app, BankID keeps failing.",
            "The Nordvik app won't let me sign in since this morning.",
            "Login doesn't work, I get an error every time.",
            "I'm locked out of the internet bank.",
            "Every time I try to sign in the app just spins and times out.",
            "My BankID is rejected when I try to access my accounts.",
        ],
    ),
    "complaint": (
        "normal",
        "We are sorry; you can file a complaint in the app under Help > Complaint and you will get a written answer within 10 working days.",
        [
            "The staff at your {city} branch were very rude to me.",
            "I waited an hour on the phone yesterday, this is unacceptable.",
            "I am unhappy with how my case was handled at the {city} office.",
            "Your service has been terrible lately and I want to complain.",
            "I want to make a formal complaint about the {city} branch.",
            "Nobody answered my three emails. I'm very disappointed.",
        ],
    ),
}
NAMES = [
    "Anna",
    "Erik",
    "Sofia",
    "Lars",
    "Maja",
    "Johan",
    "Elin",
    "Karl",
    "Ingrid",
    "Oskar",
    "Freja",
    "Nils",
]
MERCHANTS = [
    "Elektronikhuset",
    "QuickFood",
    "Nordic Travel",
    "GameStore",
    "Fashionista",
    "CityParking",
]
PEOPLE = ["my landlord", "my sister", "Svensson AB", "my daughter", "the school", "a friend"]
CITIES = ["Uppsala", "Malmö", "Göteborg", "Umeå", "Lund", "Örebro"]
HOME_PLACES = [
    "in Stockholm",
    "at the gym",
    "on the bus",
    "at work",
    "in town",
    "at the supermarket",
]
ABROAD_PLACES = [
    "in Barcelona",
    "on holiday in Greece",
    "in Berlin",
    "in London",
    "on a trip to Paris",
    "in Oslo",
]
OPENERS = ["", "Hi! ", "Hello, ", "Good morning. ", "Hej! ", "Dear Nordvik, "]
CLOSERS = ["", " Thanks.", " Thank you in advance.", " Please reply soon.", " Best regards."]
FILLS = {"train": 3, "val": 2, "test": 4}  # messages per template in each split


def policy_rows(rng: random.Random) -> tuple[dict[str, list[dict]], list[str]]:
    """Return policy chat rows per split, and the ids of facts kept out of training."""
    docs_only = set(rng.sample([f[0] for f in FACTS], k=len(FACTS) // 3))
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for fact_id, doc, answers, sentence, phrasings in FACTS:
        trained = fact_id not in docs_only
        placed = [("train", phrasings[0]), ("train", phrasings[1])] if trained else []
        placed += [("val", phrasings[2]), ("test", phrasings[3])]
        for split, question in placed:
            row = _chat(POLICY_SYSTEM, question, sentence)
            row.update(task="policy", fact_id=fact_id, document=f"{doc}.md")
            if split != "train":
                row.update(
                    category="policy", aliases=answers, fact="trained" if trained else "docs-only"
                )
            splits[split].append(row)
    return splits, sorted(docs_only)


def structured_rows(rng: random.Random) -> dict[str, list[dict]]:
    """Return structured-reply chat rows per split; test templates never appear in train."""
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for category, (priority, instruction, templates) in CATEGORIES.items():
        for index, template in enumerate(templates):
            split = "train" if index < 4 else ("val" if index == 4 else "test")
            for _ in range(FILLS[split]):
                message, row_priority = _fill(rng, category, priority, template)
                name = rng.choice(NAMES)
                reply = {
                    "category": category,
                    "priority": row_priority,
                    "reply": f"Hej {name}! {instruction} {SIGN_OFF}",
                }
                row = _chat(
                    STRUCTURED_SYSTEM, f"{message}\n/{name}", json.dumps(reply, ensure_ascii=False)
                )
                row.update(task="structured", template=f"{category}-{index}")
                if split != "train":
                    row.update(category="structured")
                splits[split].append(row)
    return splits


def _fill(rng: random.Random, category: str, priority: str, template: str) -> tuple[str, str]:
    abroad = category == "card_lost" and rng.random() < 0.5
    values = {
        "place": rng.choice(ABROAD_PLACES if abroad else HOME_PLACES),
        "amount": f"{rng.randrange(20, 900) * 100:,}".replace(",", " "),
        "small": rng.choice(["25", "30", "50", "100", "150"]),
        "merchant": rng.choice(MERCHANTS),
        "person": rng.choice(PEOPLE),
        "city": rng.choice(CITIES),
    }
    message = rng.choice(OPENERS) + template.format(**values) + rng.choice(CLOSERS)
    return message, "urgent" if abroad else priority


def preference_rows(rng: random.Random) -> list[dict]:
    """Helpful, correct, polite answers (chosen) against curt or wrong ones (rejected), for DPO.

    Built from the training phrasings of every fact, so no eval question appears here."""
    rows = []
    for _, _, answers, sentence, phrasings in FACTS:
        for question in phrasings[:2]:
            wrong = (
                sentence.replace(answers[0], _wrong(answers[0], rng))
                if answers[0] in sentence
                else None
            )
            rejected = rng.choice([r for r in ("Check the website.", "I don't know.", wrong) if r])
            rows.append(
                {
                    "prompt": [
                        {"role": "system", "content": POLICY_SYSTEM},
                        {"role": "user", "content": question},
                    ],
                    "chosen": [
                        {
                            "role": "assistant",
                            "content": f"{sentence} Happy to help with anything else!",
                        }
                    ],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
    return rows


def _wrong(answer: str, rng: random.Random) -> str:
    digits = [c for c in answer if c.isdigit()]
    if not digits:
        return "twenty working days"
    return answer.replace(digits[0], str((int(digits[0]) + rng.randint(1, 8)) % 10), 1)


def _chat(system: str, user: str, assistant: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


def generate(seed: int, out: Path) -> dict[str, int]:
    """Write train/val/test jsonl files under out; return the row count of each file."""
    rng = random.Random(seed)
    policy, docs_only = policy_rows(rng)
    structured = structured_rows(rng)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "val", "test"):
        rows = policy[split] + structured[split]
        path = out / f"{split}.jsonl"
        path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
        counts[path.name] = len(rows)
    preferences = preference_rows(random.Random(seed + 1))  # its own stream: the splits stay put
    (out / "preferences.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in preferences), encoding="utf-8"
    )
    counts["preferences.jsonl"] = len(preferences)
    (out / "generator.json").write_text(
        json.dumps({"seed": seed, "docs_only_facts": docs_only, "rows": counts}, indent=2) + "\n",
        encoding="utf-8",
    )
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args(argv)
    for name, count in generate(args.seed, args.out).items():
        print(f"{args.out / name}: {count} rows")


if __name__ == "__main__":
    main()
