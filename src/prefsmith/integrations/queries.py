"""OpenRLHF's rendered queries back into a conversation and a response.

OpenRLHF posts ``{"query": [...], "prompts": [...], "labels": [...]}`` to a remote reward
model: each query is the prompt and the response as one text, already rendered with the
policy's chat template. A density ratio scores the response given the prompt under each scoring
model's own template, so each query is split in two, then the prompt is read back into messages:

1. **The response.** With ``prompts`` given and ``query`` starting with its prompt, the
   response is the rest of the query. Otherwise the query is cut after the *last* assistant
   header it holds (:data:`RESPONSE_MARKERS`: ChatML's ``<|im_start|>assistant``, Llama 3's
   ``<|start_header_id|>assistant<|end_header_id|>``, Gemma's ``<start_of_turn>model``,
   prefsmith's plain ``Assistant:``); a query with none is refused, naming it.
2. **End tokens.** End-of-turn and padding texts at the end of the response
   (:data:`END_MARKERS`, e.g. ``<|im_end|>``, ``</s>``) are removed, with surrounding
   whitespace: each scoring model's template adds its own.
3. **The prompt.** A prompt in ChatML, Llama 3 or Gemma turns is read back into its messages
   (the header of the reply is dropped); any other text is one user turn, as TRL's standard
   prompts are.

Nothing in a query is executed or used as a template: it is only cut and matched as text.
"""

from __future__ import annotations

import re

from prefsmith.data.messages import Message

#: Assistant headers, searched from the end of a query (the response follows the last one).
RESPONSE_MARKERS = (
    "<|im_start|>assistant\n",
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "<start_of_turn>model\n",
    "Assistant:",
)
#: End-of-turn and padding texts removed from the end of a response.
END_MARKERS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "</s>",
    "<eos>",
    "<pad>",
    "<|pad|>",
)

_TURNS = (
    # ChatML: <|im_start|>role\ncontent<|im_end|>
    re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>", re.S),
    # Llama 3: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
    re.compile(
        r"<\|start_header_id\|>(system|user|assistant)<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
        re.S,
    ),
    # Gemma: <start_of_turn>user|model\ncontent<end_of_turn>
    re.compile(r"<start_of_turn>(user|model)\n(.*?)<end_of_turn>", re.S),
)


def strip_end(response: str, end_markers: tuple[str, ...] = END_MARKERS) -> str:
    """``response`` without trailing end-of-turn/padding texts and whitespace.

    >>> strip_end("Paris.<|im_end|>\\n<|endoftext|><|endoftext|>")
    'Paris.'
    """
    previous = None
    while previous != response:
        previous = response
        response = response.rstrip()
        for marker in end_markers:
            response = response.removesuffix(marker)
    return response


def prompt_messages(prompt: str) -> list[Message]:
    """A rendered prompt read back into messages; other text is one user turn.

    >>> prompt_messages("<|im_start|>system\\nBe brief.<|im_end|>\\n"
    ...                 "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    >>> prompt_messages("<bos><start_of_turn>user\\nHi<end_of_turn>\\n<start_of_turn>model\\n")
    [{'role': 'user', 'content': 'Hi'}]
    >>> prompt_messages("What is 2+2?")
    [{'role': 'user', 'content': 'What is 2+2?'}]
    """
    for pattern in _TURNS:
        turns = pattern.findall(prompt)
        if turns and turns[-1][0] == "user":
            roles = {"model": "assistant"}
            return [{"role": roles.get(r, r), "content": c.strip("\n")} for r, c in turns]
    return [{"role": "user", "content": prompt}]


def split_query(
    query: str,
    prompt: str | None = None,
    response_markers: tuple[str, ...] = RESPONSE_MARKERS,
    end_markers: tuple[str, ...] = END_MARKERS,
) -> tuple[list[Message], str]:
    """The conversation before the response, and the response, of one rendered query.

    Raises ``ValueError`` when the query cannot be split (see the module docstring).

    >>> split_query("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>")
    ([{'role': 'user', 'content': 'Hi'}], 'Hello!')
    >>> split_query("Q: 2+2? A: 4</s>", prompt="Q: 2+2? A:")
    ([{'role': 'user', 'content': 'Q: 2+2? A:'}], '4')
    >>> split_query("no header here")
    Traceback (most recent call last):
    ...
    ValueError: no assistant header in the query: send 'prompts' with it
    """
    if prompt is not None and prompt and query.startswith(prompt):
        head, response = prompt, query[len(prompt) :]
    else:
        cut = max((query.rfind(m) + len(m) if m in query else -1) for m in response_markers)
        if cut < 0:
            raise ValueError("no assistant header in the query: send 'prompts' with it")
        head, response = query[:cut], query[cut:]
    response = strip_end(response.lstrip(" ") if head.endswith(":") else response, end_markers)
    if not response.strip():
        raise ValueError("the response is empty")
    if not head.strip():
        raise ValueError("the prompt is empty")
    return prompt_messages(head), response
