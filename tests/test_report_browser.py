"""The report in a real browser: Debian's headless Chromium opens it from disk.

Checks that the page's script ran (the table holds the right number of rows), that nothing was
logged to the console (no uncaught errors), that text from the data never became markup, and
saves a screenshot. Skips, saying why, where no Chromium is installed
(``apt-get install -y chromium``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from prefsmith.report import write_report
from prefsmith.report.synthetic import synthetic_rows

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    """Path of a Chromium binary, or skip the test with the reason."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    reason = "no Chromium found (apt-get install -y chromium); browser test skipped"
    print(reason)
    pytest.skip(reason)


def run_chromium(page: Path, profile: Path, *args: str, hash_: str = "") -> tuple[str, str]:
    """Run headless Chromium on ``page``; return (stdout, console lines from stderr)."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        *args,
        page.resolve().as_uri() + hash_,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, "\n".join(console)


def dump_dom(page: Path, tmp_path: Path, hash_: str = "") -> str:
    dom, console = run_chromium(page, tmp_path / "profile", "--dump-dom", hash_=hash_)
    assert not console, f"console output (errors?) from the page:\n{console}"
    assert 'data-state="ready"' in dom, dom[:2000]
    return dom


def attribute(dom: str, name: str) -> int:
    match = re.search(rf'{name}="(\d+)"', dom)
    assert match, f"{name} not found"
    return int(match.group(1))


def table_rows(dom: str) -> int:
    table = dom.split('<table id="rows">', 1)[1]
    body = table.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return len(re.findall(r'<tr class="row', body))


def test_table_renders_every_row_and_no_console_errors(tmp_path: Path) -> None:
    rows = synthetic_rows(30, words=20)
    rows[3]["chosen"] = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    rows[3]["token_logprobs"]["chosen"]["strong_tokens"] = ["<script>", "alert(1)", "</script>"]
    rows[3]["token_logprobs"]["chosen"]["strong_logprobs"] = [-1.0, -2.0, -3.0]
    rows[3]["token_logprobs"]["chosen"]["strong_ids"] = [1, 2, 3]
    source = tmp_path / "scored.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report(source)
    dom = dump_dom(page, tmp_path, hash_="#row=3")  # open the row holding the markup
    assert table_rows(dom) == 30
    assert attribute(dom, "data-rows-rendered") == 30
    assert attribute(dom, "data-rows-filtered") == 30
    # the markup is shown as text: escaped in the DOM, never an element
    assert "<script>alert" not in dom and "<img src=x" not in dom
    assert "&lt;script&gt;" in dom
    assert 'class="tok' in dom  # the opened row's responses are coloured token by token


def test_large_run_is_paginated(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(260, words=10)))
    dom = dump_dom(write_report(source), tmp_path)
    assert table_rows(dom) == 50
    assert attribute(dom, "data-rows-filtered") == 260


def test_eval_folder_in_the_browser(tmp_path: Path) -> None:
    from test_report import make_eval_folder

    make_eval_folder(tmp_path / "eval", with_rows=True)
    dom = dump_dom(write_report(tmp_path / "eval"), tmp_path)
    assert table_rows(dom) == 6
    assert "Accuracy by section" in dom and "data:image/png;base64," in dom


def test_kwise_eval_folder_ranks_completions_and_shows_the_rmbench_matrix(tmp_path: Path) -> None:
    from prefsmith.evaluation.harness import evaluate, row_ids, write_outputs
    from prefsmith.evaluation.results import EvalResult

    styles = ("short", "long", "**long**")
    rows = [
        {
            "id": k,
            "subset": "alpacaeval",
            "prompt": f"question {k}?",
            "chosen": [f"right {k} {s}" for s in styles],
            "rejected": [f"wrong {k} {s}" for s in styles],
            "rewards_chosen": [1.0 + k, 0.5, 3.0],
            "rewards_rejected": [0.0, 2.0 - k, 2.5],
        }
        for k in range(3)
    ]
    for row in rows:
        row["reward_margin"] = min(row["rewards_chosen"]) - max(row["rewards_rejected"])
    scorer = evaluate(rows, "s")
    result = EvalResult("rm.json", 3, {"scorers": ["s"]}, {}, {"s": 0.0}, [scorer])
    for row, i in zip(rows, row_ids(rows), strict=True):
        row["margins"] = {"s": scorer.margins[i]}
    write_outputs(result, tmp_path / "eval", rows)
    dom = dump_dom(write_report(tmp_path / "eval"), tmp_path, hash_="#row=0")
    assert table_rows(dom) == 3
    assert "RM-Bench chat (3 prompts)" in dom and "chosen \\ rejected" in dom
    # Row 0 ranked: chosen[2] (3.0), rejected[2] (2.5), rejected[1] (2.0), chosen[0] (1.0), ...
    ranked = re.findall(r'class="rname">([^<]+)<', dom)
    assert ranked[:4] == ["chosen[2]", "rejected[2]", "rejected[1]", "chosen[0]"]
    assert dom.count('class="tag ok">correct<') == 3
    assert dom.count('class="tag bad">incorrect<') == 3
    assert "#1 of 6" in dom and "#6 of 6" in dom
    # The summary's accuracy is over whole rows: every correct above every incorrect.
    assert "all correct above all incorrect" in dom and "accuracy (margin &gt; 0)" not in dom


def test_screenshot(tmp_path: Path) -> None:
    source = tmp_path / "scored.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(40, words=60)))
    page = write_report(source)
    shot = tmp_path / "report.png"
    run_chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1000")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
    keep = os.environ.get("PREFSMITH_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    print(f"screenshot: {keep or shot}")


HARNESS = """<!DOCTYPE html><html><body><pre id="out">pending</pre>
<iframe id="f" src="%s" style="width:1400px;height:900px"></iframe>
<script>
var out = {};
function later(fn) { setTimeout(fn, 400); }
document.getElementById("f").addEventListener("load", function () {
  var d = this.contentDocument;
  function count() { return +d.body.getAttribute("data-rows-filtered"); }
  function set(id, value, ev) {
    var e = d.getElementById(id); e.value = value; e.dispatchEvent(new Event(ev || "change"));
  }
  function firstRow() { return +d.querySelector("#rows tbody tr").getAttribute("data-i"); }
  try {
    out.state = d.body.getAttribute("data-state");
    out.all = count();
    set("f-correct", "incorrect"); out.incorrect = count();
    set("f-correct", "correct"); out.correct = count();
    set("f-correct", "all");
    set("f-group", "subset\\u0000math-prm"); out.math = count();
    set("f-group", "");
    set("f-trunc", "yes"); out.truncated = count();
    set("f-trunc", "all");
    set("f-mmin", "0", "input"); set("f-mmax", "5", "input"); out.range = count();
    d.querySelector("button[type=button]").click();  // reset
    out.reset = count();
    var heads = d.querySelectorAll("#rows thead th");
    for (var k = 0; k < heads.length; k++) {
      if (heads[k].textContent.indexOf("margin") === 0) heads[k].click();
    }
    out.top_by_margin = firstRow();
    d.querySelectorAll("#rows tbody tr")[2].click();
    out.detail = d.querySelector("#detail h3").textContent;
    out.tokens = d.querySelectorAll("#detail .tok").length;
    var next = Array.prototype.filter.call(d.querySelectorAll("#pager button"),
      function (b) { return b.textContent.indexOf("next") === 0; })[0];
    next.click(); out.page2 = +d.body.getAttribute("data-rows-rendered");
    set("f-q", "question 7:", "input");
    later(function () {
      out.search = count();
      document.getElementById("out").textContent = JSON.stringify(out);
    });
  } catch (e) {
    out.error = String(e && e.stack || e);
    document.getElementById("out").textContent = JSON.stringify(out);
  }
});
</script></body></html>
"""


def test_filters_sorting_and_selection_work(tmp_path: Path) -> None:
    rows = synthetic_rows(120, words=8, seed=5)
    source = tmp_path / "scored.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report(source)
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS % page.name)
    # file:// pages may script a same-folder iframe only with this flag
    dom, console = run_chromium(
        harness, tmp_path / "profile", "--allow-file-access-from-files", "--dump-dom"
    )
    assert not console, console
    match = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert match, dom[:1000]
    out = json.loads(html.unescape(match.group(1)))
    assert "error" not in out, out.get("error")
    margins = [r["reward_margin"] for r in rows]
    assert out["state"] == "ready" and out["all"] == 120 == out["reset"]
    assert out["incorrect"] == sum(m <= 0 for m in margins)
    assert out["correct"] == sum(m > 0 for m in margins)
    assert out["math"] == sum(r["subset"] == "math-prm" for r in rows)
    assert out["truncated"] == sum(bool(r["truncated"]["chosen"]) for r in rows) > 0
    assert out["range"] == sum(0 <= m <= 5 for m in margins)
    assert out["top_by_margin"] == max(range(len(rows)), key=lambda i: margins[i])
    assert out["detail"].startswith("Row ") and out["tokens"] > 0
    assert out["page2"] == 50
    assert out["search"] == sum("question 7:" in r["prompt"].lower() for r in rows)


KINDS = {
    "candidates": [
        {"prompt": "hi", "responses": ["a", "<b>b</b>", "c"], "rewards": [1.0, -2.0, 0.5]},
        {"messages": [{"role": "user", "content": "yo"}], "responses": ["x"], "domain": "chat"},
    ],
    "relabel": [
        {
            "prompt": [{"role": "system", "content": "goal 7"}, {"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
            "goal": 7,
            "reward": 1.0,
            "swapped": False,
        }
    ],
    "no-tokens": synthetic_rows(7, words=5, tokens=False),
    "empty": [],
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_output_renders(tmp_path: Path, kind: str) -> None:
    rows = KINDS[kind]
    source = tmp_path / f"{kind}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dom = dump_dom(write_report(source), tmp_path)
    assert table_rows(dom) == len(rows)
