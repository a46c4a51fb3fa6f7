"""``main.py select``: choose a run and an epoch without peeking at the test labels
(docs/selection.md).

Every epoch of every run named is a candidate (runs of different settings are chosen
among separately). Each rule picks the candidate it scores best: the validation top-1
(runs with DATA.NUM_VAL); each label-free signal of diagnostics.json
(finessl/selection.py, in its direction); the rank aggregate of the label-free signals
(each candidate ranked by each signal, the mean rank decides, as V-PET aggregates its
label-free metrics); and the test oracle, for reference only. Each pick is reported
with its test top-1 and its gap to the oracle.

Beside it, for every SSL run whose supervised twin (``algorithm supervised``, same
seed, same split) is among the runs: did the unlabeled data help? Answered from the
validation split where both runs have one, else from the label-free signals; never
from the test labels.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass

from finessl.errors import UserError
from finessl.io import atomic_write_text
from finessl.report.runs import Run, find_runs
from finessl.report.sweep import markdown
from finessl.selection import direction

VALIDATION = "validation top-1"
AGGREGATE = "rank aggregate of the label-free signals"
ORACLE = "test top-1 (oracle: reads the test labels, for reference only)"


@dataclass
class Pick:
    rule: str
    run: Run
    entry: dict

    @property
    def test_top1(self) -> float:
        return self.entry["top1"]


def _candidates(runs: list[Run]) -> list[tuple[Run, dict]]:
    return [(run, entry) for run in runs for entry in run.history]


def _best(candidates, score) -> tuple[Run, dict] | None:
    """The candidate of the highest score (the first of equals); None when none has one."""
    scored = [(score(e), i) for i, (_, e) in enumerate(candidates) if score(e) is not None]
    if not scored:
        return None
    return candidates[max(scored, key=lambda s: (s[0], -s[1]))[1]]


def _ranks(values: list[float]) -> list[float]:
    """Rank 1 for the best (highest) value, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def signal_names(candidates) -> list[str]:
    """The label-free signals every candidate has."""
    sets = [set(e.get("signals", {})) for _, e in candidates]
    return sorted(set.intersection(*sets)) if sets else []


def aggregate_ranks(candidates, names: list[str]) -> list[float]:
    """Each candidate's mean rank over the signals ``names`` (each in its direction)."""
    per_signal = [_ranks([direction(n) * e["signals"][n] for _, e in candidates]) for n in names]
    return [statistics.fmean(r) for r in zip(*per_signal)]


def picks(runs: list[Run]) -> list[Pick]:
    """The pick of every rule among the epochs of ``runs`` (one setting), oracle last."""
    candidates = _candidates(runs)
    out = []
    chosen = _best(candidates, lambda e: e.get("val_top1"))
    if chosen is not None:
        out.append(Pick(VALIDATION, *chosen))
    names = signal_names(candidates)
    for name in names:
        chosen = _best(candidates, lambda e, n=name: direction(n) * e["signals"][n])
        out.append(Pick(f"signal {name} ({'higher' if direction(name) > 0 else 'lower'})",
                        *chosen))
    if names:
        ranks = aggregate_ranks(candidates, names)
        position = min(range(len(ranks)), key=lambda i: ranks[i])
        out.append(Pick(AGGREGATE, *candidates[position]))
    out.append(Pick(ORACLE, *_best(candidates, lambda e: e["top1"])))
    return out


# ---- did the unlabeled data help? --------------------------------------------------

def _split_of(run: Run):
    return (run.diagnostics or {}).get("split_hash")


def twins(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(SSL run, its supervised twin): same setting, seed and split (where recorded);
    among several (a learning-rate grid), the one trained with the same ``lr``."""
    supervised = [r for r in runs if r.get("algorithm") == "supervised"]
    out = []
    for run in runs:
        if run.get("algorithm") == "supervised":
            continue
        found = [twin for twin in supervised
                 if (twin.setting, twin.get("seed")) == (run.setting, run.get("seed"))
                 and _split_of(twin) == _split_of(run)]
        if found:
            out.append((run, min(found, key=lambda twin: twin.get("lr") != run.get("lr"))))
    return out


def _val_entry(run: Run) -> dict | None:
    validated = [e for e in run.history if "val_top1" in e]
    return max(validated, key=lambda e: e["val_top1"]) if validated else None


def unlabeled_helped(ssl: Run, twin: Run) -> dict:
    """The answer, how sure, and from what: the validation top-1 of both runs at their
    best validation epochs where both have a validation split (a z-test of the two
    accuracies on its ``n`` images: sure at |z| >= 2.58, likely at >= 1.96, else
    unclear), else the label-free signals of both last epochs (the share of the
    signals that favour the SSL run: at least 3/4 likely, else unclear; label-free
    signals are weak evidence, so never sure)."""
    ours, theirs = _val_entry(ssl), _val_entry(twin)
    n = (ssl.diagnostics or {}).get("num_val", 0)
    if ours is not None and theirs is not None and n:
        p, q = ours["val_top1"], theirs["val_top1"]
        spread = math.sqrt(max(p * (1 - p) + q * (1 - q), 1e-12) / n)
        z = (p - q) / spread
        confidence = "sure" if abs(z) >= 2.58 else "likely" if abs(z) >= 1.96 else "unclear"
        answer = "yes" if p > q else "no"
        evidence = (f"validation top-1 {100 * p:.2f}% vs {100 * q:.2f}% on {n} images "
                    f"(z = {z:+.2f})")
        return {"answer": answer if confidence != "unclear" else "unclear",
                "confidence": confidence, "evidence": evidence, "source": "validation"}
    names = sorted(set(ssl.history[-1].get("signals", {}))
                   & set(twin.history[-1].get("signals", {})))
    names = [n for n in names if not n.startswith("aux/") and n != "agree/main_aux"]
    if not names:
        return {"answer": "unknown", "confidence": "none", "source": "none",
                "evidence": "neither a validation split nor label-free signals in both runs"}
    ours, theirs = ssl.history[-1]["signals"], twin.history[-1]["signals"]
    favour = sum(direction(n) * (ours[n] - theirs[n]) > 0 for n in names)
    share = favour / len(names)
    answer = "yes" if share >= 0.75 else "no" if share <= 0.25 else "unclear"
    return {"answer": answer, "confidence": "likely" if answer != "unclear" else "unclear",
            "source": "label-free signals",
            "evidence": f"{favour} of {len(names)} label-free signals favour the SSL run "
                        f"at the last epoch (weak evidence: no labels read)"}


# ---- the command ------------------------------------------------------------------

def _by_setting(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run)
    return groups


def tables(runs: list[Run]) -> tuple[list[tuple[str, list[str], list[list[str]]]], dict]:
    """Each setting's table of picks and the twins' verdicts, as (title, header, rows),
    and the record written (selection.json): what ``select`` prints and the report shows."""
    out, record = [], {"settings": {}, "twins": []}
    for setting, group in sorted(_by_setting(runs).items()):
        chosen = picks(group)
        oracle = chosen[-1].test_top1
        rows, kept = [], []
        for pick in chosen:
            gap = 100 * (pick.test_top1 - oracle)
            rows.append([pick.rule, pick.run.label, str(pick.entry["epoch"]),
                         f"{100 * pick.test_top1:.2f}", f"{gap:+.2f}"])
            kept.append({"rule": pick.rule, "run": pick.run.path, "epoch": pick.entry["epoch"],
                         "test_top1": pick.test_top1, "gap_to_oracle": pick.test_top1 - oracle})
        record["settings"][setting] = kept
        out.append((f"{setting}: {len(group)} run(s), {sum(len(r.history) for r in group)} "
                    f"epochs", ["rule", "run", "epoch", "test top-1 (%)",
                                "gap to the oracle (points)"], rows))
    pairs = twins(runs)
    if pairs:
        rows = []
        for ssl, twin in pairs:
            verdict = unlabeled_helped(ssl, twin)
            rows.append([ssl.label, verdict["answer"], verdict["confidence"],
                         verdict["evidence"]])
            record["twins"].append({"run": ssl.path, "twin": twin.path, **verdict})
        out.append(("Did the unlabeled data help? (SSL run against its supervised twin; "
                    "no test label read)", ["run", "answer", "how sure", "from"], rows))
    return out, record


def select(paths: list[str]) -> tuple[list[str], dict]:
    """The lines printed (markdown) and the record written (selection.json)."""
    found, record = tables(find_runs(paths))
    lines = []
    for title, header, rows in found:
        lines += [f"## {title}", "", *markdown(header, rows), ""]
    return lines, record


def run(args) -> int:
    """``main.py select`` (its arguments: :func:`finessl.report.cli.add_select_arguments`)."""
    lines, record = select(args.run_dirs)
    out = args.out or os.path.join(args.run_dirs[0] if len(args.run_dirs) == 1 else ".",
                                   "report")
    try:
        os.makedirs(out, exist_ok=True)
        atomic_write_text("\n".join(lines), os.path.join(out, "selection.md"))
        atomic_write_text(json.dumps(record, indent=1), os.path.join(out, "selection.json"))
    except OSError as e:
        raise UserError(f"select: --out {out} cannot be written ({e.strerror or e})") from None
    print("\n".join(lines))
    print(f"written to {os.path.join(out, 'selection.md')}")
    return 0
