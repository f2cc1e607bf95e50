"""Deterministic multilingual toy QA (SQuAD v1.1 shape) and raw text: the embedded default.

One small "world" (people, cities, years, professions, colours, pets, instruments) and one
grammar (a fixed set of relations, each with parallel sentence and question templates) are
rendered in several languages. The languages differ in surface vocabulary and script
(English; Russian in Cyrillic with a little case and gender morphology; Chinese as CJK
characters without spaces, surname first; German), and in small word-order details, but
a paragraph drawn for (seed, split, index) states the same facts with the same template
choices in every language. A target language is therefore close to English under lexical
substitution: learning its token embeddings (masked LM on `make_text`) over a frozen,
English-trained body can make an English-trained QA model work zero-shot on it.

Only the standard library is used (``random.Random``), so the output is identical on every
platform and Python version that keeps ``random``'s documented seeding.

    make_squad(lang, n_questions, seed=0, split="train") -> SQuAD v1.1-shaped dict
    make_text(lang, n_lines, seed=0) -> list of sentences, one per line

Question ids are ``syn-{seed}-{split}-{i}`` and are shared across languages: the same id
asks for the same fact everywhere. Splits are disjoint by construction: a paragraph's
facts are hashed into buckets (train 80%, dev 10%, test 10%), for any seed.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from xlt.errors import XltError

__all__ = ["LANGS", "SPLITS", "make_squad", "make_text"]

LANGS: tuple[str, ...] = ("en", "ru", "zh", "de")
SPLITS: tuple[str, ...] = ("train", "dev", "validation", "test")
VERSION = "synthetic-1"

# split -> (lowest, highest) bucket of the 100 that a paragraph's facts hash into
_BUCKETS = {"train": (0, 79), "dev": (80, 89), "validation": (80, 89), "test": (90, 99)}

# ---------------------------------------------------------------------------------------
# Lexicon: parallel lists, index i means the same entity in every language. An entry may
# carry inflected forms separated by "|", named by _FORMS[(lang, category)]; the first
# form is the base (nominative) one.
# ---------------------------------------------------------------------------------------

_N_FEMALE = 16
_LEX: dict[str, dict[str, list[str]]] = {
    "first": {  # 16 female then 16 male
        "en": (
            "Anna Maria Elena Olga Sofia Laura Emma Clara Nina Irene Julia Lucy Helen Alice Vera Diana "
            "Peter Mark Paul Victor Oscar Adam Leo Hugo Felix Simon Daniel Martin Robert Thomas George Henry"
        ).split(),
        "ru": (
            "Анна Мария Елена Ольга Софья Татьяна Наталья Ксения Нина Ирина Юлия Светлана Галина Алиса "
            "Вера Дарья Иван Пётр Михаил Павел Виктор Олег Борис Дмитрий Алексей Сергей Николай Андрей "
            "Григорий Фёдор Юрий Егор"
        ).split(),
        "zh": (
            "丽娜 秀英 美玲 晓燕 雪梅 慧敏 婉清 若兰 静怡 雅琴 梦瑶 欣怡 诗涵 佳琪 思雨 紫萱 "
            "志强 建国 俊杰 浩然 子轩 明辉 文博 宇航 天佑 嘉豪 振宇 国华 立新 少军 晨阳 海涛"
        ).split(),
        "de": (
            "Anna Maria Lena Greta Sophie Laura Emma Klara Hanna Ingrid Julia Lisa Helga Frieda Lotte Marie "
            "Peter Markus Paul Jan Otto Lukas Felix Hans Jonas Karl Stefan Martin Jürgen Thomas Klaus Wolfgang"
        ).split(),
    },
    "surname": {
        "en": (
            "Smith Brown Wilson Clark Walker Wright Hill Hall Young King Scott Adams Evans Turner Parker "
            "Morris Cooper Ward Bell Hughes"
        ).split(),
        "ru": (
            "Коваленко Шевченко Бондаренко Ткаченко Кравченко Савченко Руденко Марченко Литвиненко "
            "Гончаренко Черных Белых Седых Долгих Мирошниченко Яковенко Пономаренко Захарченко "
            "Кузьменко Левченко"
        ).split(),
        "zh": "王 李 张 刘 陈 杨 赵 黄 周 吴 徐 孙 胡 朱 高 林 何 郭 梁 罗".split(),
        "de": (
            "Müller Schmidt Neumann Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Krause "
            "Wolf Zimmermann Kaiser Hartmann Lange Werner Krüger Lehmann"
        ).split(),
    },
    "city": {
        "en": (
            "London Paris Berlin Rome Madrid Vienna Prague Warsaw Moscow Kyiv Oslo Stockholm Helsinki "
            "Dublin Lisbon Athens Cairo Tokyo Beijing Delhi Sydney Toronto Chicago Boston"
        ).split(),
        "ru": (
            "Лондон|Лондоне Париж|Париже Берлин|Берлине Рим|Риме Мадрид|Мадриде Вена|Вене Прага|Праге "
            "Варшава|Варшаве Москва|Москве Киев|Киеве Осло Стокгольм|Стокгольме Хельсинки "
            "Дублин|Дублине Лиссабон|Лиссабоне Афины|Афинах Каир|Каире Токио Пекин|Пекине Дели "
            "Сидней|Сиднее Торонто Чикаго Бостон|Бостоне"
        ).split(),
        "zh": (
            "伦敦 巴黎 柏林 罗马 马德里 维也纳 布拉格 华沙 莫斯科 基辅 奥斯陆 斯德哥尔摩 赫尔辛基 "
            "都柏林 里斯本 雅典 开罗 东京 北京 德里 悉尼 多伦多 芝加哥 波士顿"
        ).split(),
        "de": (
            "London Paris Berlin Rom Madrid Wien Prag Warschau Moskau Kiew Oslo Stockholm Helsinki "
            "Dublin Lissabon Athen Kairo Tokio Peking Delhi Sydney Toronto Chicago Boston"
        ).split(),
    },
    "job": {
        "en": (
            "doctor teacher baker pilot farmer lawyer painter writer driver cook dentist tailor judge "
            "miner sailor banker librarian postman carpenter builder"
        ).split(),
        "ru": (
            "врач учитель пекарь пилот фермер юрист художник писатель водитель повар стоматолог "
            "портной судья шахтёр моряк банкир библиотекарь почтальон плотник строитель"
        ).split(),
        "zh": (
            "医生 教师 面包师 飞行员 农民 律师 画家 作家 司机 厨师 牙医 裁缝 法官 矿工 水手 银行家 "
            "图书管理员 邮递员 木匠 建筑工人"
        ).split(),
        "de": (
            "Arzt Lehrer Bäcker Pilot Landwirt Anwalt Maler Schriftsteller Fahrer Koch Zahnarzt Schneider "
            "Richter Bergmann Seemann Bankier Bibliothekar Briefträger Tischler Bauarbeiter"
        ).split(),
    },
    "colour": {
        "en": "red blue green yellow white black grey pink orange purple brown golden".split(),
        "ru": (
            "красный синий зелёный жёлтый белый чёрный серый розовый оранжевый фиолетовый коричневый золотой"
        ).split(),
        "zh": "红色 蓝色 绿色 黄色 白色 黑色 灰色 粉色 橙色 紫色 棕色 金色".split(),
        "de": "rot blau grün gelb weiß schwarz grau rosa orange lila braun golden".split(),
    },
    "pet": {
        "en": "dog cat parrot rabbit horse turtle goat hamster lizard snake pig duck canary donkey".split(),
        "ru": (
            "собака|собаку кошка|кошку попугай|попугая кролик|кролика лошадь черепаха|черепаху "
            "коза|козу хомяк|хомяка ящерица|ящерицу змея|змею свинья|свинью утка|утку "
            "канарейка|канарейку осёл|осла"
        ).split(),
        "zh": "狗 猫 鹦鹉 兔子 马 乌龟 山羊 仓鼠 蜥蜴 蛇 猪 鸭子 金丝雀 驴".split(),
        "de": (  # noun|accusative indefinite article
            "Hund|einen Katze|eine Papagei|einen Kaninchen|ein Pferd|ein Schildkröte|eine Ziege|eine "
            "Hamster|einen Eidechse|eine Schlange|eine Schwein|ein Ente|eine Kanarienvogel|einen Esel|einen"
        ).split(),
    },
    "instrument": {
        "en": "violin piano guitar drums flute cello harp trumpet saxophone banjo".split(),
        "ru": (
            "скрипка|скрипке пианино гитара|гитаре барабан|барабане флейта|флейте "
            "виолончель|виолончели арфа|арфе труба|трубе саксофон|саксофоне банджо"
        ).split(),
        "zh": "小提琴 钢琴 吉他 鼓 长笛 大提琴 竖琴 小号 萨克斯 班卓琴".split(),
        "de": "Geige Klavier Gitarre Schlagzeug Flöte Cello Harfe Trompete Saxofon Banjo".split(),
    },
}
_FORMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ru", "city"): ("nom", "loc"),
    ("ru", "pet"): ("nom", "acc"),
    ("ru", "instrument"): ("nom", "loc"),
    ("de", "pet"): ("nom", "acc"),
}
_YEARS = (1900, 2009)
# paragraph shape: people per paragraph, facts per person, chance of a meeting fact, chance
# that a question asks "who" (reverse) when the fact's value is unique, questions per paragraph
_PEOPLE = (2, 2, 3)  # drawn uniformly: two people twice as often as three
_FACTS_PER_PERSON = {2: (3, 4), 3: (2, 3)}  # by number of people
_P_MEET = 0.2
_P_REVERSE = 0.2
_QUESTIONS = (4, 6)
_N_TMPL = 3  # sentence templates per relation (each relation has exactly this many)

# ---------------------------------------------------------------------------------------
# Grammar. Template syntax: {S} renders slot S (P, Q: people; X, C, Y: values) and records
# its span; {S.form} renders an inflected form and records its span; {=S.form} renders
# without recording (e.g. a German article); [male|female] agrees with the gender of P.
# "facts" and each "ask" list are parallel across languages (same index, same meaning).
# "ask" maps the slot holding the answer to the question templates; "P" = reverse question.
# ---------------------------------------------------------------------------------------

_RELATIONS: dict[str, dict] = {
    "born_city": {
        "value": "city",
        "facts": {
            "en": [
                "{P} was born in {X}.",
                "{P} came into the world in {X}.",
                "{X} is the city where {P} was born.",
            ],
            "ru": [
                "{P} [родился|родилась] в {X.loc}.",
                "{P} [появился|появилась] на свет в {X.loc}.",
                "{X} — город, где [родился|родилась] {P}.",
            ],
            "zh": ["{P}出生在{X}。", "{P}诞生于{X}。", "{X}是{P}出生的城市。"],
            "de": [
                "{P} wurde in {X} geboren.",
                "{P} kam in {X} zur Welt.",
                "{X} ist die Stadt, in der {P} geboren wurde.",
            ],
        },
        "ask": {
            "X": {
                "en": [
                    "Where was {P} born?",
                    "In which city was {P} born?",
                    "What is the birthplace of {P}?",
                ],
                "ru": [
                    "Где [родился|родилась] {P}?",
                    "В каком городе [родился|родилась] {P}?",
                    "В каком городе {P} [появился|появилась] на свет?",
                ],
                "zh": ["{P}出生在哪里？", "{P}出生在哪个城市？", "{P}的出生地是哪里？"],
                "de": [
                    "Wo wurde {P} geboren?",
                    "In welcher Stadt wurde {P} geboren?",
                    "Was ist der Geburtsort von {P}?",
                ],
            },
            "P": {
                "en": ["Who was born in {X}?", "Which person was born in {X}?"],
                "ru": ["Кто родился в {X.loc}?", "Кто появился на свет в {X.loc}?"],
                "zh": ["谁出生在{X}？", "哪个人出生于{X}？"],
                "de": ["Wer wurde in {X} geboren?", "Welche Person wurde in {X} geboren?"],
            },
        },
    },
    "born_year": {
        "value": "year",
        "facts": {
            "en": [
                "{P} was born in {X}.",
                "{P} was born in the year {X}.",
                "The year {X} is when {P} was born.",
            ],
            "ru": [
                "{P} [родился|родилась] в {X} году.",
                "{P} [появился|появилась] на свет в {X} году.",
                "{X} год — год, когда [родился|родилась] {P}.",
            ],
            "zh": ["{P}出生于{X}年。", "{P}在{X}年出生。", "{X}年是{P}出生的年份。"],
            "de": [
                "{P} wurde {X} geboren.",
                "{P} wurde im Jahr {X} geboren.",
                "{X} ist das Jahr, in dem {P} geboren wurde.",
            ],
        },
        "ask": {
            "X": {
                "en": ["When was {P} born?", "In what year was {P} born?", "What year was {P} born in?"],
                "ru": [
                    "Когда [родился|родилась] {P}?",
                    "В каком году [родился|родилась] {P}?",
                    "В каком году {P} [появился|появилась] на свет?",
                ],
                "zh": ["{P}是什么时候出生的？", "{P}出生于哪一年？", "{P}是哪一年出生的？"],
                "de": [
                    "Wann wurde {P} geboren?",
                    "In welchem Jahr wurde {P} geboren?",
                    "Welches Jahr ist das Geburtsjahr von {P}?",
                ],
            },
            "P": {
                "en": ["Who was born in {X}?", "Which person was born in the year {X}?"],
                "ru": ["Кто родился в {X} году?", "Кто появился на свет в {X} году?"],
                "zh": ["谁出生于{X}年？", "哪个人是{X}年出生的？"],
                "de": ["Wer wurde {X} geboren?", "Welche Person wurde im Jahr {X} geboren?"],
            },
        },
    },
    "job": {
        "value": "job",
        "facts": {
            "en": ["{P} works as a {X}.", "{P} is a {X} by profession.", "By profession, {P} is a {X}."],
            "ru": ["{P} по профессии {X}.", "{P} — {X} по профессии.", "По профессии {P} — {X}."],
            "zh": ["{P}的工作是{X}。", "{P}是一名{X}。", "从职业上说，{P}是{X}。"],
            "de": ["{P} arbeitet als {X}.", "{P} ist von Beruf {X}.", "Von Beruf ist {P} {X}."],
        },
        "ask": {
            "X": {
                "en": [
                    "What does {P} do for a living?",
                    "What is the profession of {P}?",
                    "What job does {P} have?",
                ],
                "ru": ["Кем работает {P}?", "Какую профессию имеет {P}?", "Кто {P} по профессии?"],
                "zh": ["{P}是做什么工作的？", "{P}的职业是什么？", "{P}从事什么工作？"],
                "de": ["Was macht {P} beruflich?", "Was ist {P} von Beruf?", "Welchen Beruf hat {P}?"],
            },
            "P": {
                "en": ["Who works as a {X}?", "Which person is a {X} by profession?"],
                "ru": ["Кто по профессии {X}?", "Кто из них {X} по профессии?"],
                "zh": ["谁是{X}？", "哪个人的工作是{X}？"],
                "de": ["Wer arbeitet als {X}?", "Wer ist von Beruf {X}?"],
            },
        },
    },
    "live_city": {
        "value": "city",
        "facts": {
            "en": ["{P} lives in {X}.", "{P} now lives in {X}.", "{X} is the city where {P} lives now."],
            "ru": [
                "{P} живёт в {X.loc}.",
                "{P} сейчас живёт в {X.loc}.",
                "{X} — город, где сейчас живёт {P}.",
            ],
            "zh": ["{P}住在{X}。", "{P}现在住在{X}。", "{X}是{P}现在居住的城市。"],
            "de": [
                "{P} wohnt in {X}.",
                "{P} lebt jetzt in {X}.",
                "{X} ist die Stadt, in der {P} jetzt lebt.",
            ],
        },
        "ask": {
            "X": {
                "en": [
                    "Where does {P} live?",
                    "In which city does {P} live now?",
                    "What city is {P} living in?",
                ],
                "ru": ["Где живёт {P}?", "В каком городе сейчас живёт {P}?", "В каком городе живёт {P}?"],
                "zh": ["{P}住在哪里？", "{P}现在住在哪个城市？", "{P}在哪个城市居住？"],
                "de": ["Wo wohnt {P}?", "In welcher Stadt lebt {P} jetzt?", "In welcher Stadt wohnt {P}?"],
            },
            "P": {
                "en": ["Who lives in {X}?", "Which person lives in {X} now?"],
                "ru": ["Кто живёт в {X.loc}?", "Кто сейчас живёт в {X.loc}?"],
                "zh": ["谁住在{X}？", "哪个人现在住在{X}？"],
                "de": ["Wer wohnt in {X}?", "Wer lebt jetzt in {X}?"],
            },
        },
    },
    "colour": {
        "value": "colour",
        "facts": {
            "en": [
                "{P}'s favourite colour is {X}.",
                "{P} likes the colour {X} most of all.",
                "The favourite colour of {P} is {X}.",
            ],
            "ru": [
                "{P} больше всего любит {X} цвет.",
                "{P} любит {X} цвет больше других.",
                "Из всех цветов {P} больше всего любит {X}.",
            ],
            "zh": ["{P}最喜欢的颜色是{X}。", "{P}最喜欢{X}。", "在所有颜色中，{P}最喜欢{X}。"],
            "de": [
                "Die Lieblingsfarbe von {P} ist {X}.",
                "{P} mag die Farbe {X} am liebsten.",
                "Von allen Farben mag {P} {X} am meisten.",
            ],
        },
        "ask": {
            "X": {
                "en": [
                    "What is {P}'s favourite colour?",
                    "Which colour does {P} like most?",
                    "What colour does {P} like best?",
                ],
                "ru": [
                    "Какой цвет больше всего любит {P}?",
                    "Какой цвет {P} любит больше других?",
                    "Какой цвет {P} любит сильнее всего?",
                ],
                "zh": ["{P}最喜欢什么颜色？", "{P}最喜欢的颜色是什么？", "哪种颜色是{P}最喜欢的？"],
                "de": [
                    "Was ist die Lieblingsfarbe von {P}?",
                    "Welche Farbe mag {P} am liebsten?",
                    "Welche Farbe gefällt {P} am besten?",
                ],
            },
            "P": {
                "en": ["Whose favourite colour is {X}?", "Who likes the colour {X} most?"],
                "ru": ["Кто больше всего любит {X} цвет?", "Кто любит {X} цвет больше других?"],
                "zh": ["谁最喜欢{X}？", "哪个人最喜欢的颜色是{X}？"],
                "de": ["Wessen Lieblingsfarbe ist {X}?", "Wer mag die Farbe {X} am liebsten?"],
            },
        },
    },
    "pet": {
        "value": "pet",
        "facts": {
            "en": ["{P} has a pet {X}.", "{P} keeps a {X} at home.", "At home, {P} looks after a {X}."],
            "ru": [
                "{P} держит дома {X.acc}.",
                "{P} [завёл|завела] себе {X.acc}.",
                "Дома {P} заботится о питомце: это {X}.",
            ],
            "zh": ["{P}的宠物是{X}。", "{P}在家里养{X}。", "在家里，{P}照顾{X}。"],
            "de": [
                "{P} hat {=X.acc} {X} als Haustier.",
                "{P} hält zu Hause {=X.acc} {X}.",
                "Zu Hause kümmert sich {P} um {=X.acc} {X}.",
            ],
        },
        "ask": {
            "X": {
                "en": [
                    "What pet does {P} have?",
                    "What animal does {P} keep at home?",
                    "Which animal does {P} look after?",
                ],
                "ru": [
                    "Какое животное держит {P}?",
                    "Какого питомца [завёл|завела] {P}?",
                    "О каком питомце заботится {P}?",
                ],
                "zh": ["{P}的宠物是什么？", "{P}在家里养什么动物？", "{P}照顾什么动物？"],
                "de": [
                    "Welches Haustier hat {P}?",
                    "Welches Tier hält {P} zu Hause?",
                    "Um welches Tier kümmert sich {P}?",
                ],
            },
            "P": {
                "en": ["Who has a pet {X}?", "Who keeps a {X} at home?"],
                "ru": ["Кто держит дома {X.acc}?", "У кого дома живёт {X}?"],
                "zh": ["谁的宠物是{X}？", "谁在家里养{X}？"],
                "de": ["Wer hat {=X.acc} {X} als Haustier?", "Wer hält zu Hause {=X.acc} {X}?"],
            },
        },
    },
    "instrument": {
        "value": "instrument",
        "facts": {
            "en": [
                "{P} plays the {X}.",
                "{P} can play the {X} very well.",
                "In the evenings, {P} plays the {X}.",
            ],
            "ru": [
                "{P} играет на {X.loc}.",
                "{P} хорошо умеет играть на {X.loc}.",
                "По вечерам {P} играет на {X.loc}.",
            ],
            "zh": ["{P}演奏{X}。", "{P}很会演奏{X}。", "晚上，{P}常常演奏{X}。"],
            "de": ["{P} spielt {X}.", "{P} kann sehr gut {X} spielen.", "Am Abend spielt {P} {X}."],
        },
        "ask": {
            "X": {
                "en": [
                    "What instrument does {P} play?",
                    "Which instrument can {P} play?",
                    "What does {P} play in the evenings?",
                ],
                "ru": [
                    "На каком инструменте играет {P}?",
                    "На чём умеет играть {P}?",
                    "На чём {P} играет по вечерам?",
                ],
                "zh": ["{P}演奏什么乐器？", "{P}会演奏哪种乐器？", "{P}晚上演奏什么？"],
                "de": [
                    "Welches Instrument spielt {P}?",
                    "Welches Instrument kann {P} spielen?",
                    "Was spielt {P} am Abend?",
                ],
            },
            "P": {
                "en": ["Who plays the {X}?", "Who can play the {X}?"],
                "ru": ["Кто играет на {X.loc}?", "Кто умеет играть на {X.loc}?"],
                "zh": ["谁演奏{X}？", "谁会演奏{X}？"],
                "de": ["Wer spielt {X}?", "Wer kann {X} spielen?"],
            },
        },
    },
    "meet": {  # two people, a city C and a year Y
        "facts": {
            "en": [
                "{P} and {Q} met in {C} in {Y}.",
                "In {Y}, {P} met {Q} in {C}.",
                "{P} first met {Q} in {C} in {Y}.",
            ],
            "ru": [
                "{P} и {Q} познакомились в {C.loc} в {Y} году.",
                "В {Y} году {P} и {Q} встретились в {C.loc}.",
                "{P} и {Q} впервые встретились в {C.loc} в {Y} году.",
            ],
            "zh": [
                "{P}和{Q}于{Y}年在{C}相识。",
                "{Y}年，{P}和{Q}在{C}见面。",
                "{P}和{Q}第一次见面是{Y}年在{C}。",
            ],
            "de": [
                "{P} und {Q} lernten sich {Y} in {C} kennen.",
                "Im Jahr {Y} trafen sich {P} und {Q} in {C}.",
                "{P} traf {Q} zum ersten Mal {Y} in {C}.",
            ],
        },
        "ask": {
            "C": {
                "en": ["Where did {P} and {Q} meet?", "In which city did {P} meet {Q}?"],
                "ru": ["Где познакомились {P} и {Q}?", "В каком городе встретились {P} и {Q}?"],
                "zh": ["{P}和{Q}在哪里相识？", "{P}和{Q}在哪个城市见面？"],
                "de": ["Wo lernten sich {P} und {Q} kennen?", "In welcher Stadt trafen sich {P} und {Q}?"],
            },
            "Y": {
                "en": ["When did {P} and {Q} meet?", "In what year did {P} meet {Q}?"],
                "ru": ["Когда познакомились {P} и {Q}?", "В каком году встретились {P} и {Q}?"],
                "zh": ["{P}和{Q}是什么时候相识的？", "{P}和{Q}在哪一年见面？"],
                "de": ["Wann lernten sich {P} und {Q} kennen?", "In welchem Jahr trafen sich {P} und {Q}?"],
            },
        },
    },
}
_SINGLE = ("born_city", "born_year", "job", "live_city", "colour", "pet", "instrument")
_SEP = {"en": " ", "ru": " ", "zh": "", "de": " "}

_TOKEN = re.compile(r"\{(=?)([A-Z])(?:\.(\w+))?\}|\[([^|\]]*)\|([^\]]*)\]")


@dataclass(frozen=True)
class _Fact:
    rel: str
    people: tuple[int, ...]  # indices into the paragraph's people; first one is P
    values: tuple[tuple[str, int], ...]  # (slot, lexicon index, or the year itself)
    tmpl: int


@dataclass(frozen=True)
class _Ask:
    fact: int  # index into the paragraph's (shuffled) facts
    slot: str  # slot holding the answer
    tmpl: int


@dataclass(frozen=True)
class _Paragraph:
    people: tuple[tuple[int, int], ...]  # (first-name index, surname index)
    facts: tuple[_Fact, ...]
    asks: tuple[_Ask, ...]


# ---------------------------------------------------------------------------------------
# Drawing the abstract paragraph (language-independent: every random choice happens here)
# ---------------------------------------------------------------------------------------


def _draw(rng: random.Random) -> _Paragraph:
    n_people = rng.choice(_PEOPLE)
    firsts = rng.sample(range(len(_LEX["first"]["en"])), n_people)
    surnames = rng.sample(range(len(_LEX["surname"]["en"])), n_people)
    people = tuple(zip(firsts, surnames, strict=True))
    facts: list[_Fact] = []
    for p in range(n_people):
        rels = rng.sample(_SINGLE, rng.randint(*_FACTS_PER_PERSON[n_people]))
        born_city, live_city = rng.sample(range(len(_LEX["city"]["en"])), 2)
        for rel in rels:
            cat = _RELATIONS[rel]["value"]
            if cat == "year":
                value = rng.randint(*_YEARS)
            elif rel == "born_city":
                value = born_city
            elif rel == "live_city":
                value = live_city
            else:
                value = rng.randrange(len(_LEX[cat]["en"]))
            facts.append(_Fact(rel, (p,), (("X", value),), rng.randrange(_N_TMPL)))
    if rng.random() < _P_MEET:
        p, q = rng.sample(range(n_people), 2)
        city = rng.randrange(len(_LEX["city"]["en"]))
        facts.append(
            _Fact("meet", (p, q), (("C", city), ("Y", rng.randint(*_YEARS))), rng.randrange(_N_TMPL))
        )
    rng.shuffle(facts)

    asks: list[_Ask] = []
    for fi in rng.sample(range(len(facts)), min(len(facts), rng.randint(*_QUESTIONS))):
        fact = facts[fi]
        if fact.rel == "meet":
            slot = rng.choice("CY")
        else:
            value = fact.values[0][1]
            unique = sum(1 for f in facts if f.rel == fact.rel and f.values[0][1] == value) == 1
            slot = "P" if rng.random() < _P_REVERSE and unique else "X"
        n_tmpl = len(_RELATIONS[fact.rel]["ask"][slot]["en"])
        asks.append(_Ask(fi, slot, rng.randrange(n_tmpl)))
    return _Paragraph(people, tuple(facts), tuple(asks))


def _bucket(par: _Paragraph) -> int:
    """A paragraph's split bucket in [0, 100): a hash of its facts (not their wording or order)."""
    canon = sorted((f.rel, tuple(par.people[p] for p in f.people), f.values) for f in par.facts)
    digest = hashlib.sha256(repr(canon).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def _paragraphs(seed: int, split: str):
    """Yield (index, paragraph) in `split`'s bucket range, forever; deterministic in (seed, split)."""
    lo, hi = _BUCKETS[split]
    tag = "dev" if split == "validation" else split
    k = 0
    while True:
        rng = random.Random(f"xlt-synthetic:{seed}:{tag}:{k}")
        while True:
            par = _draw(rng)
            if lo <= _bucket(par) <= hi:
                break
        yield k, par
        k += 1


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _word(lang: str, cat: str, index: int, form: str | None) -> str:
    entry = _LEX[cat][lang][index]
    forms = entry.split("|")
    if form is None:
        return forms[0]
    names = _FORMS.get((lang, cat), ("nom",))
    if form not in names:
        raise KeyError(f"no form {form!r} for {lang}/{cat}")
    i = names.index(form)
    return forms[i] if i < len(forms) else forms[0]


def _name(lang: str, person: tuple[int, int]) -> str:
    first = _LEX["first"][lang][person[0]]
    surname = _LEX["surname"][lang][person[1]]
    return f"{surname}{first}" if lang == "zh" else f"{first} {surname}"


def _slot_text(lang: str, par: _Paragraph, fact: _Fact, slot: str, form: str | None) -> str:
    if slot in ("P", "Q"):
        return _name(lang, par.people[fact.people["PQ".index(slot)]])
    value = dict(fact.values)[slot]
    cat = "city" if slot == "C" else "year" if slot == "Y" else _RELATIONS[fact.rel]["value"]
    if cat == "year":
        return str(value)
    return _word(lang, cat, value, form)


def _render(lang: str, template: str, par: _Paragraph, fact: _Fact) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill a template; return the text and the (start, end) span of each recorded slot."""
    female = par.people[fact.people[0]][0] < _N_FEMALE
    out: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = last = 0
    for m in _TOKEN.finditer(template):
        literal = template[last : m.start()]
        out.append(literal)
        pos += len(literal)
        if m.group(2):
            text = _slot_text(lang, par, fact, m.group(2), m.group(3))
            if not m.group(1):
                spans[m.group(2)] = (pos, pos + len(text))
        else:
            text = m.group(5) if female else m.group(4)
        out.append(text)
        pos += len(text)
        last = m.end()
    out.append(template[last:])
    return "".join(out), spans


def _render_paragraph(lang: str, par: _Paragraph):
    """Return (context, [per-fact span dicts with absolute offsets], [questions])."""
    sep = _SEP[lang]
    pieces: list[str] = []
    spans: list[dict[str, tuple[int, int]]] = []
    pos = 0
    for fact in par.facts:
        if pieces:
            pos += len(sep)
        text, sp = _render(lang, _RELATIONS[fact.rel]["facts"][lang][fact.tmpl], par, fact)
        pieces.append(text)
        spans.append({k: (pos + s, pos + e) for k, (s, e) in sp.items()})
        pos += len(text)
    questions = []
    for a in par.asks:
        fact = par.facts[a.fact]
        questions.append(_render(lang, _RELATIONS[fact.rel]["ask"][a.slot][lang][a.tmpl], par, fact)[0])
    return sep.join(pieces), spans, questions


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def _check(lang: str, n: object, what: str, seed: object) -> None:
    if lang not in LANGS:
        raise XltError(f"synthetic data: unknown language {lang!r} (known: {', '.join(LANGS)})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise XltError(f"synthetic data: {what} must be an integer >= 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise XltError(f"synthetic data: seed must be an integer, got {seed!r}")


def make_squad(lang: str, n_questions: int, seed: int = 0, split: str = "train") -> dict:
    """`n_questions` SQuAD v1.1-shaped questions in `lang` (4-6 per paragraph).

    Deterministic in (seed, split, n_questions); the first k questions do not depend on
    n_questions; ids ``syn-{seed}-{split}-{i}`` ask for the same fact in every language;
    train, dev (alias validation) and test never share a paragraph.
    """
    _check(lang, n_questions, "n_questions", seed)
    if split not in _BUCKETS:
        raise XltError(f"synthetic data: unknown split {split!r} (known: {', '.join(SPLITS)})")
    tag = "dev" if split == "validation" else split
    data: list[dict] = []
    i = 0
    for k, par in _paragraphs(seed, split):
        context, spans, questions = _render_paragraph(lang, par)
        qas = []
        for ask, question in zip(par.asks, questions, strict=True):
            if i >= n_questions:
                break
            s, e = spans[ask.fact][ask.slot]
            qas.append(
                {
                    "id": f"syn-{seed}-{tag}-{i}",
                    "question": question,
                    "answers": [{"text": context[s:e], "answer_start": s}],
                }
            )
            i += 1
        data.append({"title": f"syn-{seed}-{tag}-p{k}", "paragraphs": [{"context": context, "qas": qas}]})
        if i >= n_questions:
            break
    return {"version": VERSION, "data": data}


def make_text(lang: str, n_lines: int, seed: int = 0) -> list[str]:
    """`n_lines` sentences of raw `lang` text: about two thirds facts, one third questions.

    Same world and grammar as `make_squad`; parallel across languages for equal seeds;
    different seeds give different text of the same distribution. Drawn from train-bucket
    paragraphs only, so no dev or test paragraph is ever part of the text.
    """
    _check(lang, n_lines, "n_lines", seed)
    lo, hi = _BUCKETS["train"]
    lines: list[str] = []
    k = 0
    while len(lines) < n_lines:
        rng = random.Random(f"xlt-synthetic-text:{seed}:{k}")
        k += 1
        par = _draw(rng)
        while not lo <= _bucket(par) <= hi:
            par = _draw(rng)
        for fact in par.facts:
            lines.append(_render(lang, _RELATIONS[fact.rel]["facts"][lang][fact.tmpl], par, fact)[0])
        lines.extend(_render_paragraph(lang, par)[2])
    return lines[:n_lines]


def _self_check() -> None:
    """The grammar must be parallel across languages and every answer renderable (run by the tests)."""

    def slots(template: str, recorded: bool) -> list[str]:
        return [m.group(2) for m in _TOKEN.finditer(template) if m.group(2) and not (recorded and m.group(1))]

    for rel, spec in _RELATIONS.items():
        people = ["P", "Q"] if rel == "meet" else ["P"]
        values = ["C", "Y"] if rel == "meet" else ["X"]
        for lang in LANGS:
            if len(spec["facts"][lang]) != _N_TMPL:
                raise AssertionError(f"{rel}/{lang}: expected {_N_TMPL} sentence templates")
            for t in spec["facts"][lang]:
                if sorted(slots(t, True)) != sorted(people + values):
                    raise AssertionError(f"{rel}/{lang}: {t!r} must record each of {people + values} once")
        for answer, by_lang in spec["ask"].items():
            counts = {lang: len(by_lang[lang]) for lang in LANGS}
            if len(set(counts.values())) != 1:
                raise AssertionError(f"{rel}/{answer}: question counts differ across languages: {counts}")
            for lang in LANGS:
                for t in by_lang[lang]:
                    given = set(slots(t, False))
                    if given != set(values if answer in people else people):
                        raise AssertionError(f"{rel}/{answer}/{lang}: {t!r} gives away or misses a slot")
    for cat, by_lang in _LEX.items():
        counts = {lang: len(by_lang[lang]) for lang in LANGS}
        if len(set(counts.values())) != 1:
            raise AssertionError(f"lexicon {cat}: sizes differ across languages: {counts}")
