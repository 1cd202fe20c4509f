"""Write src/specialize/evaluate/suite_data/core.jsonl: the project's own general-knowledge retention set.

Every item is a short question with its accepted answers (aliases). Run again after editing a list;
the output is deterministic. `python scripts/make_core_suite.py`
"""

import json
import random
from pathlib import Path

OUT = (
    Path(__file__).resolve().parents[1]
    / "src"
    / "specialize"
    / "evaluate"
    / "suite_data"
    / "core.jsonl"
)

CAPITALS = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("Russia", "Moscow"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Ireland", "Dublin"),
    ("Greece", "Athens"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Hungary", "Budapest"),
    ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"),
    ("Kenya", "Nairobi"),
    ("Argentina", "Buenos Aires"),
    ("Peru", "Lima"),
    ("Mexico", "Mexico City"),
    ("India", "New Delhi"),
    ("South Korea", "Seoul"),
    ("Thailand", "Bangkok"),
    ("Turkey", "Ankara"),
    ("Iceland", "Reykjavik"),
    ("the United Kingdom", "London"),
    ("Cuba", "Havana"),
    ("Chile", "Santiago"),
]
GEOGRAPHY = [
    ("What is the largest ocean on Earth?", ["Pacific", "Pacific Ocean"]),
    ("On which continent is Egypt?", ["Africa"]),
    ("What is the longest river in South America?", ["Amazon", "Amazon River"]),
    ("Which continent is the coldest?", ["Antarctica"]),
    ("What is the tallest mountain in the world?", ["Mount Everest", "Everest"]),
    ("Which country has the largest population in South America?", ["Brazil"]),
    ("In which country is the city of Venice?", ["Italy"]),
    ("Which desert is the largest hot desert in the world?", ["Sahara", "Sahara Desert"]),
    ("On which continent is Brazil?", ["South America"]),
    ("Which ocean lies between Europe and North America?", ["Atlantic", "Atlantic Ocean"]),
    ("In which country are the pyramids of Giza?", ["Egypt"]),
    ("What is the largest country in the world by area?", ["Russia"]),
]
SCIENCE = [
    ("What gas do plants take in from the air to make food?", ["carbon dioxide", "CO2"]),
    ("What gas do humans need to breathe in to live?", ["oxygen"]),
    ("What is the chemical symbol for water?", ["H2O"]),
    ("What planet is known as the Red Planet?", ["Mars"]),
    ("What is the largest planet in our solar system?", ["Jupiter"]),
    ("What star is at the centre of our solar system?", ["the Sun", "Sun"]),
    ("At what temperature in degrees Celsius does water freeze?", ["0", "zero"]),
    (
        "At what temperature in degrees Celsius does water boil at sea level?",
        ["100", "one hundred"],
    ),
    ("What force pulls objects towards the Earth?", ["gravity"]),
    ("How many legs does an insect have?", ["six", "6"]),
    ("How many legs does a spider have?", ["eight", "8"]),
    ("What is the chemical symbol for gold?", ["Au"]),
    ("What is the chemical symbol for sodium?", ["Na"]),
    ("Which organ pumps blood through the human body?", ["heart", "the heart"]),
    ("Which organ do humans use to think?", ["brain", "the brain"]),
    ("What is the hardest natural substance?", ["diamond"]),
    ("What do bees make?", ["honey"]),
    ("Which planet is closest to the Sun?", ["Mercury"]),
    ("What is frozen water called?", ["ice"]),
    ("What part of the plant makes food using sunlight?", ["leaf", "leaves", "the leaves"]),
    ("What is the process by which plants make food from sunlight called?", ["photosynthesis"]),
    ("What is the natural satellite of the Earth?", ["the Moon", "Moon"]),
    ("How many bones does an adult human have?", ["206"]),
    ("What type of animal is a whale?", ["mammal", "a mammal"]),
    ("What type of animal is a frog?", ["amphibian", "an amphibian"]),
    ("What is the boiling point of water in degrees Fahrenheit?", ["212"]),
    ("Which blood cells carry oxygen?", ["red blood cells", "red cells"]),
    ("What is the closest star to the Earth?", ["the Sun", "Sun"]),
    ("What metal is liquid at room temperature?", ["mercury"]),
    ("What is the most abundant gas in the Earth's atmosphere?", ["nitrogen"]),
    ("What is the centre of an atom called?", ["nucleus", "the nucleus"]),
    ("Which planet has the most famous rings?", ["Saturn"]),
    ("What do caterpillars turn into?", ["butterflies", "butterfly", "moths", "moth"]),
    ("What is the study of living things called?", ["biology"]),
    ("How many planets are in our solar system?", ["eight", "8"]),
    ("What is the chemical symbol for iron?", ["Fe"]),
    ("What organ do fish and humans both use to pump blood?", ["heart", "the heart"]),
    ("What is the main gas that the Sun is made of?", ["hydrogen"]),
    ("What do we call animals that have a backbone?", ["vertebrates", "vertebrate"]),
    ("What kind of energy comes from the Sun?", ["solar", "solar energy", "light", "heat"]),
]
LANGUAGE = [
    *[
        (f"What is the opposite of {w}?", [a])
        for w, a in [
            ("hot", "cold"),
            ("big", "small"),
            ("up", "down"),
            ("day", "night"),
            ("happy", "sad"),
            ("fast", "slow"),
            ("open", "closed"),
            ("light", "dark"),
            ("early", "late"),
            ("full", "empty"),
            ("old", "new"),
            ("tall", "short"),
            ("wet", "dry"),
            ("hard", "soft"),
            ("win", "lose"),
        ]
    ],
    *[
        (f"What is the plural of {w}?", [a])
        for w, a in [
            ("child", "children"),
            ("mouse", "mice"),
            ("foot", "feet"),
            ("tooth", "teeth"),
            ("man", "men"),
            ("woman", "women"),
            ("goose", "geese"),
            ("box", "boxes"),
            ("city", "cities"),
            ("knife", "knives"),
        ]
    ],
    *[
        (f"What is the past tense of {w}?", [a])
        for w, a in [
            ("go", "went"),
            ("eat", "ate"),
            ("run", "ran"),
            ("see", "saw"),
            ("write", "wrote"),
            ("swim", "swam"),
            ("buy", "bought"),
            ("think", "thought"),
            ("take", "took"),
            ("sing", "sang"),
        ]
    ],
    ("How many letters are in the English alphabet?", ["26", "twenty-six", "twenty six"]),
    ("What is the first letter of the English alphabet?", ["A"]),
    ("What is the last letter of the English alphabet?", ["Z"]),
    ("Which word is a synonym of 'big': large or tiny?", ["large"]),
    ("Which word is a synonym of 'quick': fast or slow?", ["fast"]),
]
HISTORY = [
    ("Who was the first president of the United States?", ["George Washington", "Washington"]),
    ("In which year did the Second World War end?", ["1945"]),
    ("In which year did the First World War begin?", ["1914"]),
    ("Who was the first person to walk on the Moon?", ["Neil Armstrong", "Armstrong"]),
    ("In which year did humans first land on the Moon?", ["1969"]),
    ("Who wrote the play Romeo and Juliet?", ["William Shakespeare", "Shakespeare"]),
    (
        "Which ancient civilisation built the pyramids of Giza?",
        ["the Egyptians", "Egyptians", "ancient Egyptians", "Egyptian"],
    ),
    ("Who painted the Mona Lisa?", ["Leonardo da Vinci", "da Vinci", "Leonardo"]),
    ("In which year did Christopher Columbus first reach the Americas?", ["1492"]),
    ("Who developed the theory of relativity?", ["Albert Einstein", "Einstein"]),
    ("In which city was the Berlin Wall?", ["Berlin"]),
    ("In which year did the Berlin Wall fall?", ["1989"]),
    (
        "Who was the British prime minister for most of the Second World War?",
        ["Winston Churchill", "Churchill"],
    ),
    ("Who invented the telephone?", ["Alexander Graham Bell", "Graham Bell", "Bell"]),
    ("Who was the first woman to win a Nobel Prize?", ["Marie Curie", "Curie"]),
    (
        "Which empire was ruled by Julius Caesar?",
        ["Roman", "the Roman Empire", "Rome", "Roman Republic"],
    ),
    ("Who discovered penicillin?", ["Alexander Fleming", "Fleming"]),
    (
        "Which ship sank in 1912 after hitting an iceberg?",
        ["Titanic", "the Titanic", "RMS Titanic"],
    ),
    ("Who was the first emperor of the French in 1804?", ["Napoleon", "Napoleon Bonaparte"]),
    (
        "Who wrote the theory of evolution by natural selection in On the Origin of Species?",
        ["Charles Darwin", "Darwin"],
    ),
    ("In which country did the Olympic Games begin in ancient times?", ["Greece"]),
    (
        "Who was the leader of the Soviet Union during the Second World War?",
        ["Joseph Stalin", "Stalin"],
    ),
    ("Which country gave the Statue of Liberty to the United States?", ["France"]),
    (
        "Who composed the Fifth Symphony that begins with four famous notes?",
        ["Beethoven", "Ludwig van Beethoven"],
    ),
    ("Who was the first man in space?", ["Yuri Gagarin", "Gagarin"]),
    ("Who invented the light bulb that became widely used?", ["Thomas Edison", "Edison"]),
    (
        "Which war was fought between the North and the South of the United States?",
        ["the American Civil War", "Civil War", "American Civil War"],
    ),
    ("Which wall was built across northern England by the Romans?", ["Hadrian's Wall", "Hadrian"]),
    (
        "In which country did the Industrial Revolution begin?",
        ["Britain", "Great Britain", "England", "the United Kingdom", "UK"],
    ),
    ("Who was the Egyptian queen who allied with Mark Antony?", ["Cleopatra"]),
    ("Who wrote the novel Pride and Prejudice?", ["Jane Austen", "Austen"]),
    ("Which city was destroyed by the eruption of Mount Vesuvius in 79 AD?", ["Pompeii"]),
    (
        "Who was the first president of South Africa elected in a fully democratic election?",
        ["Nelson Mandela", "Mandela"],
    ),
    ("Which country was ruled by the pharaohs?", ["Egypt"]),
    (
        "Who led India's non-violent independence movement against British rule?",
        ["Mahatma Gandhi", "Gandhi"],
    ),
    ("In which year did the French Revolution begin?", ["1789"]),
]
UNITS = [
    ("How many centimetres are in one metre?", ["100", "one hundred"]),
    ("How many metres are in one kilometre?", ["1000", "1,000", "one thousand", "a thousand"]),
    ("How many grams are in one kilogram?", ["1000", "1,000", "one thousand", "a thousand"]),
    ("How many millilitres are in one litre?", ["1000", "1,000", "one thousand", "a thousand"]),
    ("How many seconds are in one minute?", ["60", "sixty"]),
    ("How many minutes are in one hour?", ["60", "sixty"]),
    ("How many hours are in one day?", ["24", "twenty-four", "twenty four"]),
    ("How many days are in one week?", ["seven", "7"]),
    ("How many months are in one year?", ["twelve", "12"]),
    ("How many days are in a leap year?", ["366"]),
    ("How many days are in a normal year?", ["365"]),
    ("How many years are in a century?", ["100", "one hundred", "a hundred"]),
    ("How many years are in a decade?", ["ten", "10"]),
    ("How many millimetres are in one centimetre?", ["ten", "10"]),
    ("How many inches are in one foot?", ["twelve", "12"]),
    ("How many feet are in one yard?", ["three", "3"]),
    ("How many ounces are in one pound?", ["sixteen", "16"]),
    ("How many sides does a triangle have?", ["three", "3"]),
    ("How many sides does a square have?", ["four", "4"]),
    ("How many sides does a hexagon have?", ["six", "6"]),
    ("How many sides does an octagon have?", ["eight", "8"]),
    ("How many degrees are in a right angle?", ["90", "ninety"]),
    ("How many degrees are in a full circle?", ["360"]),
    ("How many cents are in one dollar?", ["100", "one hundred", "a hundred"]),
    ("How many items are in a dozen?", ["twelve", "12"]),
    ("How many weeks are in one year?", ["52", "fifty-two", "fifty two"]),
    ("How many days are in the month of September?", ["30", "thirty"]),
    ("How many days are in the month of January?", ["31", "thirty-one", "thirty one"]),
    ("How many players are on a football (soccer) team on the field?", ["eleven", "11"]),
    ("How many kilograms are in a tonne?", ["1000", "1,000", "one thousand", "a thousand"]),
    ("How many sides does a pentagon have?", ["five", "5"]),
    ("How many minutes are in half an hour?", ["30", "thirty"]),
    ("How many hours are in two days?", ["48", "forty-eight", "forty eight"]),
    ("How many days are in the month of April?", ["30", "thirty"]),
    ("How many legs does a dog have?", ["four", "4"]),
]
REASONING = [
    (
        "If it is raining, what do people often carry to stay dry?",
        ["umbrella", "an umbrella", "raincoat"],
    ),
    ("What do you use to cut paper?", ["scissors"]),
    ("Where do you keep food cold at home?", ["fridge", "refrigerator", "the fridge", "freezer"]),
    ("What do you wear on your feet?", ["shoes", "socks", "boots"]),
    ("If you are thirsty, what should you drink?", ["water"]),
    ("What do you use to unlock a door?", ["key", "a key"]),
    ("Which meal is eaten in the morning?", ["breakfast"]),
    ("What do you call the day after Monday?", ["Tuesday"]),
    ("What is the day before Sunday?", ["Saturday"]),
    ("Which month comes after March?", ["April"]),
    ("Which month comes before December?", ["November"]),
    ("Which season comes after winter?", ["spring"]),
    ("Which season comes after summer?", ["autumn", "fall"]),
    ("If a traffic light is red, what should a driver do?", ["stop"]),
    ("What do you use to write on a blackboard?", ["chalk"]),
    ("What do you need to see in the dark?", ["light", "a torch", "a flashlight", "a lamp"]),
    ("Where do people go to borrow books?", ["library", "a library", "the library"]),
    (
        "Where do people go when they are very sick and need a doctor?",
        ["hospital", "a hospital", "the hospital", "doctor"],
    ),
    ("What do cows drink?", ["water"]),
    (
        "Which is heavier, a kilogram of iron or a kilogram of feathers?",
        ["neither", "same", "equal", "they weigh the same", "both"],
    ),
    ("If you have three apples and eat one, how many apples are left?", ["two", "2"]),
    ("If today is Friday, what day will it be tomorrow?", ["Saturday"]),
    ("If today is Wednesday, what day was it yesterday?", ["Tuesday"]),
    ("What colour do you get by mixing blue and yellow?", ["green"]),
    ("What colour do you get by mixing red and white?", ["pink"]),
    ("What colour is the sky on a clear day?", ["blue"]),
    ("What colour is grass?", ["green"]),
    ("What falls from clouds when it rains?", ["water", "rain", "raindrops"]),
    ("What do you call frozen rain that falls as soft white flakes?", ["snow"]),
    ("Which animal is known for saying 'moo'?", ["cow", "a cow"]),
    ("Which animal is known for barking?", ["dog", "a dog"]),
    ("What do fish use to breathe underwater?", ["gills"]),
    ("What do you use to brush your teeth?", ["toothbrush", "a toothbrush"]),
    ("What do you call a person who flies an aeroplane?", ["pilot", "a pilot"]),
    ("What do you call a person who fixes teeth?", ["dentist", "a dentist"]),
]
DEFINITIONS = [
    ("What do you call a young dog?", ["puppy", "pup"]),
    ("What do you call a young cat?", ["kitten"]),
    ("What do you call a young cow?", ["calf"]),
    ("What do you call a young sheep?", ["lamb"]),
    ("What do you call a young horse?", ["foal", "colt", "filly"]),
    ("What do you call a baby frog?", ["tadpole"]),
    ("What is a word that means the same as another word called?", ["synonym", "a synonym"]),
    ("What is a word that means the opposite of another word called?", ["antonym", "an antonym"]),
    ("What is the name for a shape with five sides?", ["pentagon", "a pentagon"]),
    ("What is a period of one thousand years called?", ["millennium", "a millennium"]),
    ("What do you call a book of maps?", ["atlas", "an atlas"]),
    (
        "What do you call a book that lists words and their meanings?",
        ["dictionary", "a dictionary"],
    ),
    (
        "What do you call a doctor who treats animals?",
        ["vet", "veterinarian", "veterinary surgeon"],
    ),
    (
        "What do you call a scientist who studies stars and planets?",
        ["astronomer", "an astronomer"],
    ),
    ("What do you call a person who writes poems?", ["poet", "a poet"]),
    ("What do you call an animal that eats only plants?", ["herbivore", "a herbivore"]),
    ("What do you call an animal that eats only meat?", ["carnivore", "a carnivore"]),
    ("What do you call an animal that eats both plants and meat?", ["omnivore", "an omnivore"]),
    ("What is the name of a house made of snow blocks?", ["igloo", "an igloo"]),
    ("What do you call a piece of land surrounded by water?", ["island", "an island"]),
    ("What do you call a large body of salt water smaller than an ocean?", ["sea", "a sea"]),
    ("What do you call a mountain that can erupt with lava?", ["volcano", "a volcano"]),
    ("What is the word for a group of wolves?", ["pack", "a pack"]),
    ("What is the word for a group of fish swimming together?", ["school", "shoal"]),
    ("What do you call a person who cooks in a restaurant?", ["chef", "cook"]),
    ("What do you call money you pay to live in a house you do not own?", ["rent"]),
    ("What is the name for a baby kangaroo?", ["joey"]),
    (
        "What do you call the study of numbers, shapes and patterns?",
        ["mathematics", "maths", "math"],
    ),
    ("What do you call the meal eaten in the middle of the day?", ["lunch"]),
    ("What is the name for frozen water falling as small balls of ice?", ["hail", "hailstones"]),
    ("What do you call a person who works on a farm growing crops?", ["farmer", "a farmer"]),
    (
        "What do you call the line where the sky seems to meet the land or sea?",
        ["horizon", "the horizon"],
    ),
    (
        "What is the name of the instrument used to measure temperature?",
        ["thermometer", "a thermometer"],
    ),
    ("What do you call a person who designs buildings?", ["architect", "an architect"]),
    (
        "What is the name for a word that sounds the same as another but has a different meaning?",
        ["homophone", "a homophone"],
    ),
    (
        "What do you call a story about someone's life written by that person?",
        ["autobiography", "an autobiography"],
    ),
    ("What do you call a shape with eight sides?", ["octagon", "an octagon"]),
    ("What do you call water that falls from the sky?", ["rain", "precipitation"]),
]
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def arithmetic(rng: random.Random) -> list[tuple[str, list[str]]]:
    """Small sums, differences and products, each answer with its word form where it has one."""
    items, seen = [], set()
    while len(items) < 40:
        op = rng.choice(["plus", "minus", "times"])
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        if op == "minus" and b > a:
            a, b = b, a
        value = a + b if op == "plus" else a - b if op == "minus" else a * b
        question = f"What is {a} {op} {b}?"
        if question in seen:
            continue
        seen.add(question)
        answers = [str(value)] + ([NUMBER_WORDS[value]] if value < len(NUMBER_WORDS) else [])
        items.append((question, answers))
    return items


def main() -> None:
    rng = random.Random(20261122)
    categories = {
        "geography": [(f"What is the capital of {c}?", [a]) for c, a in CAPITALS] + GEOGRAPHY,
        "science": SCIENCE,
        "arithmetic": arithmetic(rng),
        "language": LANGUAGE,
        "history": HISTORY,
        "units": UNITS,
        "everyday_reasoning": REASONING,
        "definitions": DEFINITIONS,
    }
    lines = []
    for category, items in categories.items():
        for index, (question, answers) in enumerate(items):
            lines.append(
                json.dumps(
                    {
                        "id": f"{category}-{index:03d}",
                        "category": category,
                        "question": question,
                        "answers": answers,
                    },
                    ensure_ascii=False,
                )
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} items in {len(categories)} categories -> {OUT}")
    for category, items in categories.items():
        print(f"  {category}: {len(items)}")


if __name__ == "__main__":
    main()
