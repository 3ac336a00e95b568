"""Real-looking English text that validation (and the tests' tokenizers) use.

Short queries, review-like sentences and longer passages, so that validation
covers several lengths, padding inside a batch, and (query, passage) pairs the
way a cross-encoder reranker sees them.
"""

from __future__ import annotations

SINGLES: tuple[str, ...] = (
    "Great product, arrived on time and works exactly as described.",
    "Terrible customer service. I waited two weeks for a reply and never got a refund.",
    "ok",
    "The battery lasts about a day, which is fine for the price.",
    "I would not recommend this hotel: the room was dirty and the staff were rude.",
    "What a wonderful film! The acting, the music and the photography are all superb.",
    "Meh.",
    "The update broke the login page; users on Safari cannot sign in anymore.",
    "Shipping was fast, but the box was damaged and one of the glasses was cracked.",
    "Absolutely loved the pasta at this place, we will definitely come back next week.",
    "How do I reset my password if I no longer have access to my email address?",
    "The quarterly report shows revenue up 12% year over year, driven by cloud services.",
)

QUERIES: tuple[str, ...] = (
    "how long does a lithium battery last",
    "what is the capital of australia",
    "symptoms of vitamin d deficiency",
    "best way to learn python",
    "why is the sky blue",
    "who wrote pride and prejudice",
)

PASSAGES: tuple[str, ...] = (
    "Lithium-ion batteries typically last two to three years or 300 to 500 charge cycles, "
    "whichever comes first. Heat and full discharges shorten their life.",
    "Canberra is the capital city of Australia. It was chosen as a compromise between "
    "Sydney and Melbourne, the two largest cities.",
    "Vitamin D deficiency can cause fatigue, bone pain, muscle weakness and mood changes. "
    "Many people have no symptoms at all.",
    "The sky appears blue because molecules in the air scatter blue light from the sun "
    "more than they scatter red light, a process called Rayleigh scattering.",
    "Pride and Prejudice is an 1813 novel of manners by Jane Austen. It follows the "
    "turbulent relationship between Elizabeth Bennet and Fitzwilliam Darcy.",
    "Python is a popular first language. Working through small projects, reading other "
    "people's code and practising every day is more effective than watching videos.",
)

# A long passage: repeated to reach the model's longest inputs.
LONG_PASSAGE: str = " ".join(
    (
        "The committee met on Tuesday to review the proposal for the new public library.",
        "Several members raised concerns about the cost of the building, the loss of parking",
        "spaces and the timeline, which they described as optimistic. The architect answered",
        "that the design uses standard materials, that a multi-storey car park is planned two",
        "streets away, and that the contractor has delivered similar projects on schedule.",
        "After a long discussion the committee voted to approve the plan, subject to a review",
        "of the budget in six months and a public consultation on the opening hours.",
    )
)

# Text for training the tests' tiny tokenizers: everything above.
TRAINING_TEXT: tuple[str, ...] = SINGLES + QUERIES + PASSAGES + (LONG_PASSAGE,)
