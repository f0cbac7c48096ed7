"""The HTML report: the data it embeds, escaping, and every kind of prefsmith output."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from prefsmith.report import default_output, report_data, token_view, write_report
from prefsmith.report.html import embed_json
from prefsmith.report.synthetic import synthetic_rows
from prefsmith.report.tokens import display_pieces, piece_bytes, piece_style

SCRIPT = "<script>alert(1)</script>"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def embedded(html: str) -> dict:
    """The JSON data block of a written page."""
    match = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S
    )
    assert match, "no data block"
    return json.loads(match.group(1))


def decoded_values(entry: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry["v"]), dtype="<f4").reshape(-1, 2)


# ---------------------------------------------------------------- contributions


@pytest.mark.parametrize("shared", [True, False])
def test_contributions_sum_to_the_reward(shared: bool) -> None:
    rows = synthetic_rows(40, words=30, shared=shared, seed=3)
    data = report_data(rows)
    for row, out in zip(rows, data["rows"], strict=True):
        for entry in out["r"]:
            name = entry["n"]
            view = token_view(row["token_logprobs"][name])
            assert view is not None and view.shared is shared
            assert abs(view.total - row[f"reward_{name}"]) < 1e-6
            assert abs(entry["sum"] - row[f"reward_{name}"]) < 1e-6
            assert entry["sh"] is shared
            # the page's float32 copies agree to display precision
            values = decoded_values(entry)
            assert len(values) == len(entry["t"]) == len(row["token_logprobs"][name]["strong_ids"])
            assert abs(float((values[:, 0] - values[:, 1]).sum()) - entry["sum"]) < 1e-2


def test_cross_tokenizer_aligns_characters_and_template_tails() -> None:
    # Strong: chat template, no leading space, ends <|im_end|>\n. Weak: plain template with a
    # space after "Assistant:", ends <eos>\n\n. A multi-byte character is split differently.
    detail = {
        "strong_ids": [1, 2, 3, 4, 5],
        "strong_tokens": ["Caf", "é au", " lait", "<|im_end|>", "\n"],
        "strong_logprobs": [-1.0, -2.0, -0.5, -0.1, -0.2],
        "weak_ids": [9, 8, 7, 6, 5],
        "weak_tokens": [" Ca", "fé", " au lait", "<eos>", "\n\n"],
        "weak_logprobs": [-3.0, -1.5, -2.0, -0.7, -0.4],
    }
    view = token_view(detail)
    assert view is not None and not view.shared
    assert view.pieces == detail["strong_tokens"]
    assert abs(view.total - (-3.8 - -7.6)) < 1e-12
    weak = view.weak
    # " Ca" (3 bytes, -1 each): the leading space goes to the first token, "Ca" too.
    # "fé" (3 bytes, -0.5 each): "f" to "Caf", "é" (2 bytes) to "é au".
    assert abs(weak[0] - (-3.0 - 0.5)) < 1e-12
    # " au lait" (8 bytes, -0.25 each): " au" (3) to "é au", " lait" (5) to " lait".
    assert abs(weak[1] - (-1.0 - 0.75)) < 1e-12
    assert abs(weak[2] - -1.25) < 1e-12
    # the weak tail "<eos>\n\n" (-1.1 over 7 bytes) is spread over "<|im_end|>\n" (11 bytes)
    assert abs(weak[3] - -1.1 * 10 / 11) < 1e-12 and abs(weak[4] - -1.1 / 11) < 1e-12
    assert "<eos>" in view.note


def test_old_raw_pieces_are_shown_as_text() -> None:
    detail = {
        "strong_ids": [1, 2, 3, 4, 5, 6],
        "strong_tokens": ["The", "Ġsky", "ĠcafÃ", "©", "<|im_end|>", "Ċ"],
        "strong_logprobs": [-0.5, -1.25, -2.0, -0.125, -0.25, -0.5],
        "weak_ids": [7, 8, 9, 10, 11, 12],
        "weak_tokens": ["▁The", "▁sky", "▁caf", "<0xC3>", "<0xA9>", "<eos>", "\n\n"][:6],
        "weak_logprobs": [-1.0, -2.0, -1.0, -0.5, -0.5, -0.25],
    }
    assert piece_style(detail["strong_tokens"]) == "bytelevel"
    assert piece_style(detail["weak_tokens"]) == "sentencepiece"
    view = token_view(detail)
    assert view is not None and view.decoded_raw
    assert view.pieces == ["The", " sky", " caf", "é", "<|im_end|>", "\n"]
    assert abs(view.total - (sum(detail["strong_logprobs"]) - sum(detail["weak_logprobs"]))) < 1e-9


def test_piece_helpers() -> None:
    assert piece_bytes("ĠĊ", "bytelevel") == b" \n"
    assert piece_bytes("<0x0A>", "sentencepiece") == b"\n"
    assert display_pieces([b"\xf0\x9f", b"\x99\x82 ok"]) == ["", "🙂 ok"]


def test_same_tokenizer_by_ids_and_missing_logprobs() -> None:
    detail = {
        "strong_ids": [5, 6],
        "strong_logprobs": [-1.0, -1.0],
        "weak_ids": [5, 6],
        "weak_logprobs": [-2.0, -0.5],
    }
    view = token_view(detail)
    assert view is not None and view.shared and view.contributions == [1.0, -0.5]
    assert view.pieces == ["⟨5⟩", "⟨6⟩"]  # no token texts saved
    assert token_view({"strong_ids": [1]}) is None


@pytest.mark.parametrize(("reduction", "divisor"), [("mean-char", "chars"), ("mean", "tokens")])
def test_mean_reductions_state_the_divisor(reduction: str, divisor: str) -> None:
    rows = synthetic_rows(3, words=8, shared=True)
    for row in rows:
        row["scored_with"]["reduction"] = reduction
        for name in ("chosen", "rejected"):
            n = (
                len(row[name])
                if divisor == "chars"
                else len(row["token_logprobs"][name]["strong_ids"])
            )
            row[f"reward_{name}"] /= n
    data = report_data(rows)
    assert data["reduction"] == reduction
    assert any(reduction in note for note in data["notes"])
    for row, out in zip(rows, data["rows"], strict=True):
        for entry in out["r"]:
            assert abs(entry["sum"] / entry["div"] - row[f"reward_{entry['n']}"]) < 1e-9


# ---------------------------------------------------------------- escaping


def test_html_in_data_is_escaped(tmp_path: Path) -> None:
    row = {
        "id": f"x{SCRIPT}",
        "subset": "<b>subset</b>",
        "prompt": [{"role": "user", "content": f"Say {SCRIPT} & <img src=x onerror=alert(2)>"}],
        "chosen": [{"role": "assistant", "content": SCRIPT}],
        "rejected": "</script><script>alert(3)</script>",
        "reward_chosen": 1.0,
        "reward_rejected": 0.0,
        "reward_margin": 1.0,
        "note</script>": SCRIPT,
    }
    source = write_jsonl(tmp_path / "x.jsonl", [row])
    source.with_name("x.jsonl.settings.json").write_text(json.dumps({"strong": SCRIPT}))
    html = write_report(source).read_text(encoding="utf-8")
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert html.count("<script") == 2  # the data block and the page's own script
    assert html.count("</script>") == 2
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in html
    data = embedded(html)
    assert data["rows"][0]["r"][0]["x"] == SCRIPT  # the text itself is intact
    assert data["rows"][0]["p"] == [["user", f"Say {SCRIPT} & <img src=x onerror=alert(2)>"]]


def test_embed_json_escapes_markup() -> None:
    text = embed_json({"k": "</script>&\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"k": "</script>&\u2028"}


def test_page_has_no_network_references(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(2, words=5))
    html = write_report(source).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "cdn" not in html.lower()


# ---------------------------------------------------------------- inputs


def test_score_output_with_side_settings(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "score.jsonl", synthetic_rows(6, words=10))
    template = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    settings = {
        "strong": "s",
        "reduction": "sum",
        "shared_tokenizer": False,
        "strong_template": template,
    }
    source.with_name("score.jsonl.settings.json").write_text(json.dumps(settings))
    path = write_report(source)
    assert path == tmp_path / "score.jsonl.report.html"
    data = embedded(path.read_text(encoding="utf-8"))
    assert data["kind"] == "pairs" and len(data["rows"]) == 6 and data["tokens"]
    assert data["groups"] == ["subset"]
    flat = dict(kv for section in data["settings"] for kv in section[1])
    assert flat["strong_template"].startswith("sha256:")  # templates by hash, not text
    assert template not in path.read_text(encoding="utf-8")
    assert data["rows"][5]["tr"] and not data["rows"][0]["tr"]  # synthetic row 5 is truncated


def test_parquet_input(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = synthetic_rows(5, words=10)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "score.parquet")
    path = write_report(tmp_path / "score.parquet", tmp_path / "out" / "r.html")
    data = embedded(path.read_text(encoding="utf-8"))
    assert len(data["rows"]) == 5
    for row, out in zip(rows, data["rows"], strict=True):
        assert abs(out["r"][0]["sum"] - row["reward_chosen"]) < 1e-6
        assert out["m"] == pytest.approx(row["reward_margin"])


def test_max_rows_and_bad_lines(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(10, words=5, tokens=False))
    with source.open("a") as handle:
        handle.write("{not json\n")
    data = embedded(write_report(source, max_rows=4).read_text(encoding="utf-8"))
    assert len(data["rows"]) == 4 and data["total_rows"] == 10
    assert not data["tokens"]
    assert any("could not be parsed" in note for note in data["notes"])


def test_candidates_pairs_relabel_rmboost_rows_do_not_crash(tmp_path: Path) -> None:
    candidates = {
        "prompt": [{"role": "user", "content": "hi"}],
        "responses": ["a", "b", "c"],
        "rewards": [1.0, -2.0, 0.5],
        "domain": "chat",
    }
    pairs_row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
        "chosen_index": 0,
        "rejected_index": 1,
        "reward_chosen": 1.0,
        "reward_rejected": -2.0,
        "reward_margin": 3.0,
        "candidate_rewards": [1.0, -2.0, None],
        "candidate_status": ["ok", "ok", "truncated"],
    }
    relabel_row = {
        "prompt": [{"role": "system", "content": "goal 7"}, {"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
        "goal": 7,
        "reward": 1.0,
        "swapped": False,
    }
    implicit = {
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}],
        "rmboost_label": "better",
    }
    kinds = {}
    for name, rows in {
        "cand": [candidates],
        "pairs": [pairs_row],
        "relabel": [relabel_row],
        "rmboost": [implicit],
        "empty": [{}],
    }.items():
        source = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        kinds[name] = embedded(write_report(source).read_text(encoding="utf-8"))
    cand = kinds["cand"]
    assert cand["kind"] == "candidates" and cand["rows"][0]["m"] == 3.0
    assert [r["rw"] for r in cand["rows"][0]["r"]] == [1.0, -2.0, 0.5]
    assert cand["groups"] == ["domain"]
    assert any(k == "candidate_status" for k, _ in kinds["pairs"]["rows"][0]["f"])
    relabel = kinds["relabel"]["rows"][0]
    assert relabel["g"] == {"goal": "7"} and relabel["m"] is None
    assert relabel["r"][0]["rw"] == 1.0 and relabel["p"][0] == ["system", "goal 7"]
    rmboost = kinds["rmboost"]["rows"][0]
    assert rmboost["p"] == [["user", "q"]] and rmboost["r"][1]["x"] == "b"
    assert kinds["empty"]["rows"][0]["r"] == []


# ---------------------------------------------------------------- eval folders


def make_eval_folder(folder: Path, with_rows: bool, data_file: Path | None = None) -> dict:
    ids = [f"alpacaeval-easy/{i}" for i in range(3)] + [f"math-prm/{i}" for i in range(3)]
    margins_a = {pid: (-1.0) ** k * (k + 1) for k, pid in enumerate(ids)}
    margins_b = {pid: 0.5 for pid in ids}

    def scorer(name: str, margins: dict) -> dict:
        return {
            "scorer": name,
            "subsets": {
                "alpacaeval-easy": {"correct": 2, "total": 3, "accuracy": 2 / 3, "section": "Chat"},
                "math-prm": {"correct": 1, "total": 3, "accuracy": 1 / 3, "section": "Reasoning"},
            },
            "sections": {"Chat": 2 / 3, "Reasoning": 1 / 3, "Overall": 0.5},
            "margins": margins,
        }

    results = {
        "data": str(data_file) if data_file else "gone.jsonl",
        "pairs": len(ids),
        "settings": {"scorers": ["density-ratio:sum", "logprob:mean"], "shared_tokenizer": False},
        "models": {
            "strong": {
                "name": "s",
                "fingerprint": "f",
                "dtype": "float32",
                "template_sha256": "ab" * 32,
            },
            "weak": {
                "name": "w",
                "fingerprint": "g",
                "dtype": "float32",
                "template_sha256": "cd" * 32,
            },
        },
        "timings": {"strong_seconds": 1.234},
        "scorers": [scorer("density-ratio:sum", margins_a), scorer("logprob:mean", margins_b)],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "accuracy_by_section.png").write_bytes(b"\x89PNG\r\n\x1a\nfake-sections")
    (folder / "margins.png").write_bytes(b"\x89PNG\r\n\x1a\nfake-margins")
    if with_rows:
        rows = synthetic_rows(len(ids), words=6)
        for row, pid in zip(rows, ids, strict=True):
            row["id"], row["subset"] = pid, pid.split("/")[0]
            row["margins"] = {"density-ratio:sum": margins_a[pid], "logprob:mean": margins_b[pid]}
        write_jsonl(folder / "rows.jsonl", rows)
    return results


@pytest.mark.parametrize("with_rows", [True, False])
def test_eval_folder(tmp_path: Path, with_rows: bool) -> None:
    folder = tmp_path / "eval"
    make_eval_folder(folder, with_rows)
    path = write_report(folder)
    assert path == folder / "report.html" == default_output(folder)
    html = path.read_text(encoding="utf-8")
    data = embedded(html)
    assert data["kind"] == "eval"
    assert data["scorers"] == ["density-ratio:sum", "logprob:mean"]
    assert [s[0] for s in data["eval"]["sections"]] == ["Chat", "Reasoning", "Overall"]
    assert [s[0] for s in data["eval"]["subsets"]] == ["alpacaeval-easy", "math-prm"]
    assert [p[0] for p in data["eval"]["plots"]] == ["accuracy by section", "margins"]
    assert (
        "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake-margins").decode()
        in html
    )
    rows = data["rows"]
    assert len(rows) == 6
    assert [r["ms"]["density-ratio:sum"] for r in rows] == [1.0, -2.0, 3.0, -4.0, 5.0, -6.0]
    assert {r["g"]["subset"] for r in rows} == {"alpacaeval-easy", "math-prm"}
    assert {r["g"]["section"] for r in rows} == {"Chat", "Reasoning"}
    assert data["groups"] == ["subset", "section"]
    assert data["tokens"] is with_rows
    flat = {k: v for section in data["settings"] for k, v in section[1]}
    assert flat["template_sha256"] in ("abababababab", "cdcdcdcdcdcd")


def test_eval_folder_without_rows_reads_its_data_file(tmp_path: Path) -> None:
    data_rows = [
        {"id": f"{s}/{i}", "subset": s, "prompt": f"q{i}", "chosen": "good", "rejected": "bad"}
        for s in ("alpacaeval-easy", "math-prm")
        for i in range(3)
    ]
    data_file = write_jsonl(tmp_path / "pairs.jsonl", data_rows)
    make_eval_folder(tmp_path / "eval", with_rows=False, data_file=data_file)
    data = embedded(write_report(tmp_path / "eval").read_text(encoding="utf-8"))
    row = data["rows"][0]
    assert row["p"] == [["user", "q0"]] and [r["x"] for r in row["r"]] == ["good", "bad"]


def test_missing_sources_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match=r"results\.json"):
        write_report(tmp_path / "folder")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="not a rows file"):
        write_report(tmp_path / "x.csv")


# ---------------------------------------------------------------- CLI


def test_cli_prints_the_path(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prefsmith.cli.main import app

    source = write_jsonl(tmp_path / "s.jsonl", synthetic_rows(2, words=5))
    result = CliRunner().invoke(app, ["report", str(source), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "r.html")
    assert (tmp_path / "r.html").exists()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())


# ---------------------------------------------------------------- real tokenizers, real writer

TEXT = "Rayleigh scattering.\n\nCafé 🙂 naïve—ok\n  indented\tcode();"


@pytest.mark.parametrize("name", ["smol_tokenizer", "gemma_tokenizer"])
def test_raw_pieces_of_real_tokenizers_read_back_as_text(name: str, request) -> None:
    tokenizer = request.getfixturevalue(name)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    detail = {
        "strong_ids": ids,
        "strong_tokens": pieces,
        "strong_logprobs": [-1.0] * len(ids),
        "weak_ids": ids,
        "weak_tokens": pieces,
        "weak_logprobs": [-0.5] * len(ids),
    }
    view = token_view(detail)
    assert view is not None and "".join(view.pieces) == TEXT


def test_cross_tokenizer_alignment_with_real_tokenizers(smol_tokenizer, gemma_tokenizer) -> None:
    rng = np.random.default_rng(0)
    sides = {}
    for side, tokenizer, text in (
        ("strong", smol_tokenizer, TEXT + "<|im_end|>\n"),
        ("weak", gemma_tokenizer, " " + TEXT + "<eos>\n\n"),
    ):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        sides[f"{side}_ids"] = ids
        sides[f"{side}_tokens"] = tokenizer.convert_ids_to_tokens(ids)
        sides[f"{side}_logprobs"] = (-rng.exponential(2.0, len(ids))).tolist()
    view = token_view(sides)
    assert view is not None and not view.shared
    expected = sum(sides["strong_logprobs"]) - sum(sides["weak_logprobs"])
    assert abs(view.total - expected) < 1e-9
    assert "".join(view.pieces) == TEXT + "<|im_end|>\n"
    assert "<eos>" in view.note and len(TEXT.encode()) <= int(view.note.split(" bytes")[0])


def test_report_of_a_real_score_run(tmp_path: Path, tiny_backends) -> None:
    """Rows written by the score step with token log-probs (tiny models, two tokenizers)."""
    from prefsmith.data.runner import RunOptions, run_rows
    from prefsmith.rewards.base import ScoreStep
    from prefsmith.rewards.density_ratio import DensityRatioReward, Reduction

    rows = [
        {"id": "a", "subset": "s", "prompt": "2+2?", "chosen": "4 🙂", "rejected": SCRIPT},
        {"prompt": "Hi", "responses": ["Hello there.\nBye", "x"]},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    reward = DensityRatioReward(tiny_backends["chatml-a"], tiny_backends["plain-c"], Reduction.SUM)
    step = ScoreStep(reward, save_token_logprobs=True)
    run_rows(source, tmp_path / "out.jsonl", step, RunOptions(progress=False))
    html = write_report(tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert "<script>alert" not in html
    data = embedded(html)
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for row, out in zip(scored, data["rows"], strict=True):
        for k, entry in enumerate(out["r"]):
            reward = row["rewards"][k] if "rewards" in row else row[f"reward_{entry['n']}"]
            n_tokens = sum(row["response_tokens"][entry["n"]])
            # exact: the writer keeps full-precision log-probs
            assert abs(entry["sum"] - reward) <= 1e-6, (entry["sum"], reward, n_tokens)
            assert not entry["sh"]
            response = row["responses"][k] if "responses" in row else row[entry["n"]]
            assert "".join(entry["t"]).startswith(response)  # pieces read back as the text


def test_weak_tokens_without_text_pass_their_mass_on() -> None:
    detail = {
        "strong_tokens": ["ab", "cd"],
        "strong_logprobs": [-1.0, -1.0],
        "weak_tokens": ["", "abc", "d", ""],
        "weak_logprobs": [-0.5, -3.0, -1.0, -0.25],
    }
    view = token_view(detail)
    assert view is not None
    # "" passes -0.5 to "abc" (-3.5 over 3 bytes); the trailing "" goes to "d"
    assert view.weak == pytest.approx([-3.5 * 2 / 3, -3.5 / 3 - 1.25])
    assert view.total == pytest.approx(-2.0 + 4.75)


def test_broken_text_and_infinite_logprobs_still_give_a_page(tmp_path: Path) -> None:
    row = synthetic_rows(1, words=4)[0]
    row["prompt"] = "half a pair \ud83d here"
    row["token_logprobs"]["rejected"]["strong_logprobs"][0] = float("-inf")
    row["reward_rejected"] = float("-inf")
    source = tmp_path / "s.jsonl"
    source.write_text(json.dumps(row) + "\n")  # json writes the lone surrogate as \ud83d
    data = embedded(write_report(source).read_text(encoding="utf-8"))
    rejected = data["rows"][0]["r"][1]
    assert rejected["sum"] is None and rejected["rw"] is None
    assert data["rows"][0]["p"] == [["user", "half a pair \ud83d here"]]
