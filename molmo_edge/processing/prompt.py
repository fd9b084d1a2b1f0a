"""The chat prompt and the Molmo2 task prompts.

A Molmo2 prompt (Qwen3 chat template, no system prompt, no thinking) is
    BOS + <visual tokens> + "<|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n"
The visual tokens come first, before the user turn. BOS is the tokenizer's BOS, or its EOS when it
has none (`<|im_end|>` for Qwen3): the Hugging Face processor prepends it to the chat-template text.

The task prompts are the exact strings Molmo2 was trained on; a real checkpoint answers best to them.
"""
from __future__ import annotations

import re

from molmo_edge.processing.layout import TokenSequence
from molmo_edge.processing.tokenizer import IM_END, IM_START

NONE_HINT = "Please say 'There are none.' if it is not in the image."

# A query that starts like this, or ends with sentence punctuation, is already a full instruction.
_SENTENCE_STARTS = ("point", "how", "track", "count", "what", "where", "which", "who", "is", "are", "does",
                    "do", "can", "find", "show", "locate", "describe", "tell", "list", "give", "mark", "there")
_SENTENCE_START_RE = re.compile(r"^(?:%s)\b" % "|".join(_SENTENCE_STARTS), re.IGNORECASE)


def user_turn(text: str) -> str:
    """The user turn and the opening of the assistant turn, as chat text."""
    return f"{IM_START}user\n{text}{IM_END}\n{IM_START}assistant\n"


def point_prompt(label: str, none_hint: bool = True) -> str:
    """`Point to {label}` plus, by default, the line asking for 'There are none.' when absent."""
    return f"Point to {label}\n{NONE_HINT}" if none_hint else f"Point to {label}"


def count_prompt(label: str) -> str:
    return f"How many {label} are there?"


def track_prompt(label: str, fps: float | None = None) -> str:
    """`Track {label}.`, or `Track {label} in {fps} FPS.` when the sampling rate is given."""
    if fps is None:
        return f"Track {label}."
    fps_text = f"{fps:g}"
    return f"Track {label} in {fps_text} FPS."


def is_full_sentence(query: str) -> bool:
    query = query.strip()
    return bool(query) and (query[-1] in ".?!" or bool(_SENTENCE_START_RE.match(query)))


def prompt_for_query(query: str, task: str = "point") -> str:
    """Turn a user query into the prompt text: a full instruction ("How many dogs are there?",
    "Point to the cup.") is kept as it is; a bare label ("red circle") becomes the task prompt."""
    query = query.strip()
    if is_full_sentence(query):
        return query
    builders = {"point": point_prompt, "count": count_prompt, "track": track_prompt}
    if task not in builders:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(builders)}")
    return builders[task](query)


def chat_prompt(bos_token: str, visual: TokenSequence | None, text: str) -> TokenSequence:
    """BOS, then the visual tokens, then the user turn (see the module docstring)."""
    sequence = TokenSequence().add_tokens([bos_token])
    if visual is not None:
        sequence.extend(visual)
    return sequence.add_text(user_turn(text))
