"""Prompt/response boundary on token ids, BOS/EOS, templates and truncation."""

from __future__ import annotations

import copy

import pytest

from prefsmith.models.encoding import PLAIN_CHAT_TEMPLATE, ConversationEncoder, adds_bos

USER = [{"role": "user", "content": "Name a prime number."}]
SYSTEM = [{"role": "system", "content": "Answer briefly."}, *USER]


def response_text(tokenizer, encoded) -> str:
    return tokenizer.decode(list(encoded.input_ids[encoded.response_start :]))


def test_chatml_boundary_is_exact_and_counts_end_of_turn(smol_tokenizer):
    enc = ConversationEncoder(copy.deepcopy(smol_tokenizer), max_length=512)
    for messages in (USER, SYSTEM):
        e = enc.encode(messages, "Seven is prime.")
        prompt_ids = smol_tokenizer(enc.render(messages, None), add_special_tokens=False)
        assert list(e.input_ids[: e.response_start]) == prompt_ids["input_ids"]
        assert response_text(smol_tokenizer, e) == "Seven is prime.<|im_end|>\n"
        assert not e.boundary_merged and e.truncated is None
    system_ids = enc.encode(SYSTEM, "x").input_ids
    assert "Answer briefly." in smol_tokenizer.decode(list(system_ids))


def test_plain_template_adds_bos_once_and_eos(gemma_tokenizer):
    tok = copy.deepcopy(gemma_tokenizer)
    assert not tok.chat_template and adds_bos(tok)
    enc = ConversationEncoder(tok, max_length=512)
    assert enc.template == PLAIN_CHAT_TEMPLATE
    e = enc.encode(SYSTEM, "Seven.")
    assert e.input_ids[0] == tok.bos_token_id
    assert list(e.input_ids).count(tok.bos_token_id) == 1
    assert e.input_ids[-3:].count(tok.eos_token_id) == 1
    assert response_text(tok, e).strip().startswith("Seven.")
    assert tok.decode(list(e.input_ids[: e.response_start])).endswith("Assistant:")


def test_template_with_bos_text_does_not_double_bos(gemma_tokenizer):
    tok = copy.deepcopy(gemma_tokenizer)
    tok.chat_template = "{{ bos_token }}" + PLAIN_CHAT_TEMPLATE
    e = ConversationEncoder(tok, max_length=512).encode(USER, "Two.")
    assert e.input_ids[0] == tok.bos_token_id
    assert list(e.input_ids).count(tok.bos_token_id) == 1


def test_boundary_that_merges_is_flagged_and_keeps_the_merged_token(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    # The generation prompt ends in a space that BPE merges with the response's first word.
    tok.chat_template = PLAIN_CHAT_TEMPLATE.replace(
        "Assistant:{% endif %}", "Assistant: {% endif %}"
    )
    enc = ConversationEncoder(tok, max_length=512)
    e = enc.encode(USER, "Seven is prime.")
    assert e.boundary_merged
    prompt_ids = tok(enc.render(USER, None), add_special_tokens=False)["input_ids"]
    assert e.response_start == len(prompt_ids) - 1
    assert response_text(tok, e).startswith(" Seven is prime.")


def test_long_prompt_is_trimmed_from_the_left_keeping_bos_and_response(gemma_tokenizer):
    tok = copy.deepcopy(gemma_tokenizer)
    long_user = [{"role": "user", "content": "word " * 300}]
    full = ConversationEncoder(tok, max_length=4096).encode(long_user, "The answer is four.")
    cut = ConversationEncoder(tok, max_length=64).encode(long_user, "The answer is four.")
    assert cut.truncated == "prompt" and len(cut.input_ids) == 64
    assert cut.input_ids[0] == tok.bos_token_id
    assert cut.input_ids[cut.response_start :] == full.input_ids[full.response_start :]
    tiny = ConversationEncoder(tok, max_length=4).encode(long_user, "The answer is four.")
    assert tiny.truncated == "response" and len(tiny.input_ids) == 4


def test_empty_rendered_response_is_an_error(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}"
    )
    with pytest.raises(ValueError, match="no tokens"):
        ConversationEncoder(tok, max_length=64).encode(USER, "ignored by this template")
