"""This run's verdict on each statement of the write-up, computed from the trials.

Every verdict rests on an Estimate (charlstm.sweep.noise): a change in mean validation
perplexity with a 95% interval, the wider of the seed interval and the validation-text interval.
A change is *separable* when its interval excludes zero. A statement that perplexity falls is
correct when the change is separably negative, incorrect when it is separably positive, and not
separable from noise otherwise; a statement that it does not fall, the other way round; a
statement that two settings give the same perplexity can be shown incorrect, never correct.
A statement whose studies are missing from the trials is not answered.
"""

import dataclasses
from dataclasses import dataclass, field

from charlstm.config import TrainConfig
from charlstm.data import download
from charlstm.data.normalize import TEXT8_ALPHABET
from charlstm.sweep import writeup
from charlstm.sweep.noise import REPLICATES, Cells, Estimate

CORRECT, INCORRECT = "correct", "incorrect"
NOT_SEPARABLE, NOT_ANSWERED = "not separable from noise", "not answered"
# The options that define a run besides the four the write-up varies: a point is the write-up's
# only when they are the assignment's defaults.
SETTINGS = ("lr", "decay_steps", "decay_rate", "clip", "init", "valid_size", "cell", "dtype")
VARIED = ("batch_size", "nodes", "unrollings", "steps")
# A model that learned nothing guesses every character alike: perplexity 27.
UNIFORM_PERPLEXITY = len(TEXT8_ALPHABET)
# With one seed and no per-character losses there is no interval: within this fraction of the
# best mean then counts as levelled off.
LEVEL_TOLERANCE = 0.01
RULE = ("A change is separable when its 95% interval excludes zero. The interval is the wider of "
        "two: the seed interval (Student t over seeds, points compared seed by seed) and the "
        "validation-text interval (a block bootstrap of each run's per-character losses, the "
        "same resamples for every run). A statement that perplexity falls is correct when the "
        "change is separably negative, incorrect when separably positive, and not separable "
        "from noise otherwise. Whether a model can be trained at all (H4, and the questions' "
        "\"can you\") is whether it learns: its mean perplexity separably below 27, what a "
        "uniform guess over the 27 characters gets.")


def fmt(x: float) -> str:
    return f"{x:.3f}".replace("-", "−")


def interval(e: Estimate) -> str:
    if e.half is None:
        return "no interval (one seed, no per-character losses)"
    return f"[{fmt(e.low)}, {fmt(e.high)}]"


def noise(e: Estimate) -> str:
    """Both noises of an estimate, and which one decides."""
    seeds = (f"seeds ±{e.seed_half:.3f} over {e.seeds} seeds" if e.seed_half is not None
             else "seeds: not measured (one seed)")
    text = (f"validation text ±{e.text_half:.3f} over {e.chars:,} characters"
            if e.text_half is not None else "validation text: not measured (no per-character "
                                            "losses stored)")
    decides = f"; the wider ({e.decided_by}) decides" if e.decided_by else ""
    return f"{seeds}; {text}{decides}"


def needs(e: Estimate) -> str:
    """How many seeds and characters a difference of this size needs to be separable."""
    if e.value == 0:
        return "a difference of exactly 0 is never separable"
    seeds = e.seeds_needed()
    chars = e.chars_needed()
    if seeds is None:
        seeds_text = ("an unknown number of seeds (rerun with --repeats 3 or more to measure the "
                      "seed spread)" if e.seed_se is None else "more than 100,000 seeds")
    elif seeds <= e.seeds:
        seeds_text = f"no more than this run's {e.seeds} seeds"
    else:
        seeds_text = f"{seeds} seeds (this run: {e.seeds})"
    if chars is None:
        chars_text = "an unknown amount of validation text (no per-character losses stored)"
    elif chars <= e.chars:
        chars_text = f"no more than this run's {e.chars:,} validation characters"
    else:
        chars_text = f"{chars:,} validation characters (this run: {e.chars:,})"
    return (f"to be separable, a difference of {fmt(abs(e.value))} needs {seeds_text} and "
            f"{chars_text}")


def describe(e: Estimate) -> str:
    return f"{fmt(e.value)}, 95% interval {interval(e)}; {noise(e)}; {needs(e)}"


@dataclass
class Claim:
    """One testable part of a statement and what the trials say about it."""

    text: str
    verdict: str
    detail: str = ""
    estimate: Estimate | None = None
    short: str = ""  # for the side-by-side table, when the estimate alone would not say it


@dataclass
class Answer:
    statement: writeup.Statement
    verdict: str
    summary: str
    claims: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def combine(claims: list) -> str:
    """A statement's verdict from its parts: incorrect when any part is, else not separable
    when any part is, else not answered when a part's study is missing, else correct."""
    verdicts = [c.verdict for c in claims]
    for verdict in (INCORRECT, NOT_SEPARABLE, NOT_ANSWERED):
        if verdict in verdicts:
            return verdict
    return CORRECT if verdicts else NOT_ANSWERED


def falls(e: Estimate | None) -> str:
    """The verdict on 'perplexity falls' for a change e (later minus earlier)."""
    if e is None:
        return NOT_ANSWERED
    return {-1: CORRECT, 1: INCORRECT, 0: NOT_SEPARABLE}[e.sign]


def does_not_fall(e: Estimate | None) -> str:
    if e is None:
        return NOT_ANSWERED
    return {-1: INCORRECT, 1: CORRECT, 0: NOT_SEPARABLE}[e.sign]


@dataclass
class DataIdentity:
    """What the runs were trained on, from the size and checksum each run recorded."""

    corpora: set
    sources: set
    known: bool

    @property
    def text8(self) -> bool:
        return (self.known and len(self.corpora) == 1
                and download.is_text8(*next(iter(self.corpora))))

    def describe(self) -> str:
        if not self.known:
            return ("unknown: the trials record no corpus size and checksum, so the write-up's "
                    "figures are not comparable")
        if self.text8:
            return (f"text8 ({download.TEXT8_CHARACTERS:,} characters, SHA-1 "
                    f"{download.TEXT8_SHA1[:12]}…, as the write-up's)")
        sizes = ", ".join(f"{chars:,} characters (SHA-1 {sha1[:12]}…)"
                          for chars, sha1 in sorted(self.corpora))
        return (f"{', '.join(sorted(self.sources))} in text8 form, {sizes}: not text8, so the "
                "write-up's figures are not comparable; its statements are tested on this corpus")


class Trials:
    """The finished runs of a sweep, grouped into points, with what the verdicts ask of them."""

    def __init__(self, rows: list, grids: dict, replicates: int = REPLICATES):
        self.rows, self.grids = rows, grids
        self.cells = Cells(replicates)
        self.defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        for row in rows:
            params = {k: row[k] for k in self.swept(row["study"])}
            self.cells.add(self.key(row["study"], params), row["seed"], row["valid_perplexity"],
                           row.get("losses"))

    def swept(self, study: str) -> list:
        return list(self.grids[study]["swept"])

    @staticmethod
    def key(study: str, params: dict) -> tuple:
        return (study, tuple(sorted(params.items())))

    def params(self, key: tuple) -> dict:
        return dict(key[1])

    def config(self, key: tuple) -> dict:
        """Every option of the point's runs: train's defaults, the study's fixed values, the
        point's own."""
        return {**self.defaults, **self.grids[key[0]]["fixed"], **self.params(key)}

    def points(self, study: str) -> list:
        """The study's points that have runs, in the order of their values."""
        keys = [k for k in self.cells.runs if k[0] == study]
        return sorted(keys, key=lambda k: tuple((str(type(v)), v) for _, v in k[1]))

    def listed(self, study: str) -> bool:
        return "points" in self.grids[study]

    def one_d(self, param: str) -> str | None:
        """A study that sweeps `param` alone (its product grid), if any has runs."""
        for name, grid in self.grids.items():
            if list(grid["swept"]) == [param] and not self.listed(name) and self.points(name):
                return name
        return None

    def two_d(self, a: str, b: str) -> str | None:
        for name, grid in self.grids.items():
            if set(grid["swept"]) == {a, b} and not self.listed(name) and self.points(name):
                return name
        return None

    def curve(self, study: str, param: str) -> list:
        """[(value, key)] of a one-parameter study, by value."""
        return sorted(((self.params(k)[param], k) for k in self.points(study)),
                      key=lambda vk: vk[0])

    def estimate(self, weights: dict) -> Estimate | None:
        return self.cells.estimate(weights)

    def change(self, later: tuple, earlier: tuple) -> Estimate | None:
        """Mean perplexity at `later` minus at `earlier`."""
        return self.cells.estimate({later: 1.0, earlier: -1.0})

    def data(self) -> DataIdentity:
        rows = [r for r in self.rows if r.get("data")]
        corpora = {(r["data"].get("characters"), r["data"].get("sha1")) for r in rows}
        known = bool(rows) and len(rows) == len(self.rows) and all(
            c is not None and s is not None for c, s in corpora)
        return DataIdentity(corpora, {str(r["data"].get("source")) for r in rows}, known)

    def valid_chars(self) -> set:
        return {len(r["losses"]) for r in self.rows if r.get("losses") is not None}

    def writeup_comparable(self, key: tuple) -> str | None:
        """Why a point cannot be set beside the write-up's numbers (None: it can): the data must
        be text8 and every setting but the four the write-up varies the assignment's."""
        if not self.data().text8:
            return "the data is not text8"
        config = self.config(key)
        for name in SETTINGS:
            wanted = writeup.VALID_SIZE if name == "valid_size" else self.defaults[name]
            if config[name] != wanted:
                return f"--{name.replace('_', '-')} is {config[name]}, the write-up's {wanted}"
        return None

    def writeup_curve(self, study: str, param: str) -> list:
        """The write-up's runs that lie on a one-parameter study's curve: (value, perplexity)."""
        points = self.points(study)
        if not points or self.writeup_comparable(points[0]) is not None:
            return []
        base = self.config(points[0])
        return sorted((run.params()[param], run.perplexity) for run in writeup.RUNS
                      if all(run.params()[k] == base[k] for k in VARIED if k != param))

    def level_off(self, curve: list) -> tuple | None:
        """(value, excess) for the smallest value whose mean is not separably above the best
        value's, excess being its estimate against the best (None for the best itself); the 1%
        rule replaces the interval where there is none."""
        if len(curve) < 2:
            return None
        means = {v: self.estimate({k: 1.0}).value for v, k in curve}
        best_value, best_key = min(curve, key=lambda vk: means[vk[0]])
        for value, key in curve:
            if key == best_key:
                return value, None
            excess = self.change(key, best_key)
            if excess is None:
                continue
            if excess.half is None:
                if means[value] <= means[best_value] * (1 + LEVEL_TOLERANCE):
                    return value, excess
            elif excess.sign <= 0:
                return value, excess
        return best_value, None

    def rises(self, curve: list) -> list:
        """[(a, b, estimate)] for each step of the curve where perplexity rises separably."""
        out = []
        for (va, ka), (vb, kb) in zip(curve, curve[1:]):
            e = self.change(kb, ka)
            if e is not None and e.sign > 0:
                out.append((va, vb, e))
        return out

    def best(self, study: str) -> tuple:
        key = min(self.points(study), key=lambda k: self.estimate({k: 1.0}).value)
        return key, self.estimate({key: 1.0})


def _endpoints(trials: Trials, param: str, verdict_of) -> tuple[Claim, list]:
    """The change from the smallest to the largest value of `param` in its study."""
    study = trials.one_d(param)
    if study is None:
        return Claim(f"{param}: no study sweeps it alone", NOT_ANSWERED,
                     f"not answered: run `charlstm sweep --preset udacity`, or sweep "
                     f"--{param.replace('_', '-')}"), []
    curve = trials.curve(study, param)
    (v0, k0), (v1, k1) = curve[0], curve[-1]
    e = trials.change(k1, k0)
    p0, p1 = trials.estimate({k0: 1.0}).value, trials.estimate({k1: 1.0}).value
    claim = Claim(f"{param} {v0} → {v1}", verdict_of(e),
                  f"study `{study}`: mean perplexity {fmt(p0)} at {param} {v0}, {fmt(p1)} at "
                  f"{v1}; change {describe(e)}.", e)
    return claim, curve


def level_note(trials: Trials, param: str, curve: list) -> str:
    found = trials.level_off(curve)
    if found is None:
        return ""
    value, excess = found
    author = writeup.AUTHOR_LEVEL_OFF.get(param)
    theirs = f" (the author: about {author})" if author is not None else ""
    first = curve[0][1]
    intervals = value == curve[0][0] or trials.change(first, dict(
        (v, k) for v, k in curve)[value]).half is not None
    if excess is None and intervals:
        how = "the best value itself: every smaller value is separably worse"
    elif excess is None:
        how = (f"the best value itself: no smaller value is within {LEVEL_TOLERANCE:.0%} of its "
               "mean; no interval with one seed and no per-character losses")
    elif excess.half is None:
        how = (f"within {LEVEL_TOLERANCE:.0%} of the best mean; no interval with one seed and "
               "no per-character losses")
    else:
        how = f"{fmt(excess.value)} above the best, interval {interval(excess)}"
    return (f"{param}: gains level off at {value}{theirs}: the smallest value not separably worse "
            f"than the best ({how}).")


def rises_note(trials: Trials, param: str, curve: list) -> str:
    rises = trials.rises(curve)
    if not rises:
        return (f"{param}: no separable rise between neighbouring values ({len(curve)} "
                "values).")
    parts = [f"{a} → {b}: +{e.value:.3f} {interval(e)}" for a, b, e in rises]
    return (f"{param}: perplexity rises separably {len(rises)} time(s) between neighbouring "
            f"values, so not monotonically: " + "; ".join(parts) + f" (each of the "
            f"{len(curve) - 1} pairs of neighbours is judged at 95%: on a flat stretch about 1 "
            "pair in 40 rises separably by chance).")


def hypothesis_1(trials: Trials) -> Answer:
    claim, curve = _endpoints(trials, "unrollings", falls)
    notes = [level_note(trials, "unrollings", curve), rises_note(trials, "unrollings", curve)] \
        if curve else []
    return Answer(writeup.HYPOTHESES[0], claim.verdict, _short(claim), [claim],
                  [n for n in notes if n])


def hypothesis_2(trials: Trials) -> Answer:
    claims, notes = [], []
    for param in ("nodes", "batch_size"):
        claim, curve = _endpoints(trials, param, does_not_fall)
        claims.append(claim)
        if curve:
            notes.append(level_note(trials, param, curve))
    verdict = combine(claims)
    summary = "; ".join(_short(c) for c in claims)
    return Answer(writeup.HYPOTHESES[1], verdict, summary, claims, [n for n in notes if n])


def hypothesis_3(trials: Trials) -> Answer:
    claim, curve = _endpoints(trials, "steps", falls)
    notes = [rises_note(trials, "steps", curve)] if curve else []
    return Answer(writeup.HYPOTHESES[2], claim.verdict, _short(claim), [claim], notes)


def _learns(trials: Trials, keys: list, what: str, text: str) -> Claim:
    verdict, detail, e = _learning(trials, keys, what)
    short = (f"{verdict}, the best of {len(keys)} at {fmt(e.value)} {interval(e)} against "
             f"{UNIFORM_PERPLEXITY} for nothing learned" if e else "")
    return Claim(text, verdict, detail, e, short)


def _learning(trials: Trials, keys: list, what: str) -> tuple[str, str, Estimate | None]:
    """Whether runs of these points learn: (verdict on 'they learn', detail, best estimate). A
    point learns when its mean perplexity is separably below UNIFORM_PERPLEXITY, what a model
    that learned nothing gets by guessing every character alike; it fails when separably not."""
    if not keys:
        return NOT_ANSWERED, f"not answered: no run had {what}", None
    estimates = {k: trials.estimate({k: 1.0}) for k in keys}
    learned = [k for k, e in estimates.items()
               if e.high is not None and e.high < UNIFORM_PERPLEXITY]
    failed = [k for k, e in estimates.items() if e.low is not None and e.low >= UNIFORM_PERPLEXITY]
    best = min(keys, key=lambda k: estimates[k].value)
    e = estimates[best]
    verdict = CORRECT if learned else (INCORRECT if len(failed) == len(keys) else NOT_SEPARABLE)
    config = trials.config(best)
    detail = (f"{len(keys)} point(s) had {what}: {len(learned)} learned (mean perplexity "
              f"separably below {UNIFORM_PERPLEXITY}, a uniform guess over the "
              f"{UNIFORM_PERPLEXITY} characters), {len(failed)} did not. The best, batch size "
              f"{config['batch_size']}, {config['nodes']} nodes, {config['unrollings']} "
              f"unrollings, {config['steps']} steps (study `{best[0]}`): {fmt(e.value)} "
              f"{interval(e)}.")
    return verdict, detail, e


def hypothesis_4(trials: Trials) -> Answer:
    """'Must be equal' is a requirement, which the author tested by training with them unequal:
    it is incorrect when a setting with nodes != batch size learns."""
    unequal = [k for study in trials.grids for k in trials.points(study)
               if trials.config(k)["nodes"] != trials.config(k)["batch_size"]]
    learns, detail, e = _learning(trials, unequal, "nodes ≠ batch size")
    verdict = {CORRECT: INCORRECT, INCORRECT: CORRECT}.get(learns, learns)
    claim = Claim("a model with nodes ≠ batch size cannot learn", verdict, detail, e)
    notes = []
    for study in trials.grids:
        if not trials.listed(study):
            continue
        points = trials.points(study)
        for equal in points:
            ce = trials.config(equal)
            if ce["nodes"] != ce["batch_size"]:
                continue
            for other in points:
                co = trials.config(other)
                if co["nodes"] != co["batch_size"] and all(
                        co[n] == ce[n] for n in co if n not in ("nodes", "batch_size")):
                    change = trials.change(other, equal)
                    notes.append(f"Beside it, batch size {co['batch_size']} with {co['nodes']} "
                                 f"nodes against batch size {ce['batch_size']} with "
                                 f"{ce['nodes']} nodes (study `{study}`, all else equal): "
                                 f"{fmt(change.value)} "
                                 f"{interval(change)}; a smaller batch or fewer nodes, which H2 "
                                 "is about, more than their inequality.")
    summary = (f"the best of {len(unequal)} points with nodes ≠ batch size: {fmt(e.value)} "
               f"{interval(e)}, against {UNIFORM_PERPLEXITY} for a model that learned nothing"
               if e else claim.detail)
    return Answer(writeup.HYPOTHESES[3], verdict, summary, [claim], notes)


def _marginal(trials: Trials, study: str, param: str, other: str, lo, hi) -> dict:
    """Weights of the change from param = lo to param = hi, averaged over `other`'s values that
    have both."""
    keys = {(trials.params(k)[param], trials.params(k)[other]): k for k in trials.points(study)}
    others = sorted({o for (_, o) in keys if (lo, o) in keys and (hi, o) in keys})
    weights = {}
    for o in others:
        weights[keys[(hi, o)]] = weights.get(keys[(hi, o)], 0.0) + 1.0 / len(others)
        weights[keys[(lo, o)]] = weights.get(keys[(lo, o)], 0.0) - 1.0 / len(others)
    return weights


def _grid_effect(trials: Trials, study: str, param: str, other: str) -> tuple:
    values = sorted({trials.params(k)[param] for k in trials.points(study)})
    weights = _marginal(trials, study, param, other, values[0], values[-1])
    return values[0], values[-1], weights, trials.estimate(weights) if weights else None


def question_1(trials: Trials) -> Answer:
    study = trials.two_d("nodes", "unrollings")
    statement = writeup.QUESTIONS[0]
    if study is None:
        claim = Claim("nodes x unrollings", NOT_ANSWERED, "not answered: no study sweeps nodes "
                      "and unrollings together (run `charlstm sweep --preset udacity`)")
        return Answer(statement, NOT_ANSWERED, claim.detail, [claim])
    claims = []
    for param, other in (("nodes", "unrollings"), ("unrollings", "nodes")):
        lo, hi, _, e = _grid_effect(trials, study, param, other)
        claims.append(Claim(
            f"{param} {lo} → {hi}", falls(e),
            f"{param} {lo} → {hi}, averaged over every {other} value and compared seed by "
            f"seed: {describe(e) if e else 'no pair of runs'}.", e))
    key, best = trials.best(study)
    params = trials.params(key)
    notes = [f"The lowest mean perplexity of study `{study}` is {fmt(best.value)} "
             f"{interval(best)}, at nodes {params['nodes']} and unrollings "
             f"{params['unrollings']}; see its heatmap and surface below."]
    summary = "; ".join(_short(c) for c in claims)
    return Answer(statement, combine(claims), summary, claims, notes)


def question_2(trials: Trials) -> Answer:
    statement = writeup.QUESTIONS[1]
    over = [k for study in trials.grids for k in trials.points(study)
            if trials.config(k)["unrollings"] > trials.config(k)["nodes"]]
    claims = [_learns(trials, over, "more unrollings than nodes",
                      "a model with more unrollings than nodes learns")]
    study = trials.two_d("nodes", "unrollings")
    if study is None:
        claims.append(Claim("more unrollings still help", NOT_ANSWERED,
                            "not answered: no study sweeps nodes and unrollings together"))
        claims.append(Claim("the nodes matter most", NOT_ANSWERED,
                            "not answered: no study sweeps nodes and unrollings together"))
        return Answer(statement, combine(claims), "; ".join(_short(c) for c in claims), claims)
    keys = {(trials.params(k)["nodes"], trials.params(k)["unrollings"]): k
            for k in trials.points(study)}
    weights, used = {}, []
    for n in sorted({n for n, _ in keys}):
        beyond = sorted(u for (m, u) in keys if m == n and u > n)
        if len(beyond) >= 2:
            used.append((n, beyond[0], beyond[-1]))
    for n, first, last in used:
        weights[keys[(n, last)]] = 1.0 / len(used)
        weights[keys[(n, first)]] = -1.0 / len(used)
    e = trials.estimate(weights) if weights else None
    where = ", ".join(f"nodes {n}: {a} → {b}" for n, a, b in used)
    claims.append(Claim(
        "beyond the number of nodes, more unrollings still lower perplexity", falls(e),
        (f"from the first unrollings value above the nodes to the largest ({where}), averaged "
         f"and compared seed by seed: {describe(e)}." if e else
         "no nodes value has two unrollings values above it"), e))
    lo_n, hi_n, w_nodes, _ = _grid_effect(trials, study, "nodes", "unrollings")
    lo_u, hi_u, w_unr, _ = _grid_effect(trials, study, "unrollings", "nodes")
    # improvement from nodes minus improvement from unrollings: -(change nodes) + (change unr.)
    contrast = {k: -w_nodes.get(k, 0.0) + w_unr.get(k, 0.0) for k in set(w_nodes) | set(w_unr)}
    c = trials.estimate(contrast) if w_nodes and w_unr else None
    verdict = NOT_ANSWERED if c is None else {1: CORRECT, -1: INCORRECT, 0: NOT_SEPARABLE}[c.sign]
    claims.append(Claim(
        "the nodes matter most", verdict,
        f"the improvement from nodes {lo_n} → {hi_n} minus the improvement from unrollings "
        f"{lo_u} → {hi_u}, each averaged over the other parameter: "
        f"{describe(c) if c else 'no pair of runs'}.", c))
    notes = []
    for run in writeup.RUNS:
        if run.unrollings > run.nodes:
            key = _runs_key(trials, run)
            if key is not None:
                e1 = trials.estimate({key: 1.0})
                notes.append(f"The write-up's run with {run.nodes} nodes and {run.unrollings} "
                             f"unrollings: mean perplexity {fmt(e1.value)} {interval(e1)} here.")
    return Answer(statement, combine(claims), "; ".join(_short(c) for c in claims), claims,
                  notes)


def question_3(trials: Trials) -> Answer:
    """More unrollings than steps: set each such point against the point with 1 unrolling that
    shares everything else; the author's first guess was that they are the same."""
    statement = writeup.QUESTIONS[2]
    pairs = []
    for study in trials.grids:
        points = trials.points(study)
        configs = {k: trials.config(k) for k in points}
        for long in points:
            cl = configs[long]
            if cl["unrollings"] <= cl["steps"]:
                continue
            for one in points:
                co = configs[one]
                if co["unrollings"] == 1 and all(co[n] == cl[n] for n in co if n != "unrollings"):
                    e = trials.change(long, one)
                    if e is not None:
                        pairs.append((study, long, cl, e))
    if not pairs:
        claim = Claim("more unrollings than steps", NOT_ANSWERED,
                      "not answered: no run with more unrollings than steps has a 1-unrolling "
                      "run beside it (the preset's `runs` study has one)")
        return Answer(statement, NOT_ANSWERED, claim.detail, [claim])
    claims = [_learns(trials, [long for _, long, _, _ in pairs], "more unrollings than steps",
                      "a model with more unrollings than steps learns")]
    for study, _, cl, e in pairs:
        verdict = INCORRECT if e.sign != 0 else NOT_SEPARABLE
        direction = "lower" if e.value < 0 else "higher"
        claims.append(Claim(
            f"{cl['unrollings']} unrollings in {cl['steps']} steps give the same perplexity as 1",
            verdict,
            f"study `{study}`: {cl['unrollings']} unrollings against 1, both {cl['steps']} "
            f"steps ({direction} with more unrollings): {describe(e)}.", e))
    summary = "; ".join(
        f"tested as \"the same as 1 unrolling\": {c.text.split(' give')[0]} against 1, "
        f"{fmt(c.estimate.value)} {interval(c.estimate)}" for c in claims[1:])
    verdict = combine(claims)
    return Answer(statement, verdict, summary, claims,
                  ["Tested as the author's first guess, that such a run is the same as one with "
                   "1 unrolling: a separable difference shows it is not; no interval can show it "
                   "is."])


def _runs_key(trials: Trials, run: writeup.Run) -> tuple | None:
    """The point of a listed-points study that has the write-up run's batch, nodes, unrollings."""
    for study in trials.grids:
        if not trials.listed(study):
            continue
        for key in trials.points(study):
            config = trials.config(key)
            if all(config[k] == v for k, v in run.params().items() if k != "steps"):
                return key
    return None


def _short(claim: Claim) -> str:
    e = claim.estimate
    if claim.short:
        return f"{claim.text}: {claim.short}"
    if e is None:
        return f"{claim.text}: {claim.verdict}"
    return f"{claim.text}: {fmt(e.value)} {interval(e)}"


ANSWERS = (hypothesis_1, hypothesis_2, hypothesis_3, hypothesis_4, question_1, question_2,
           question_3)


def answers(trials: Trials) -> list:
    return [answer(trials) for answer in ANSWERS]


def writeup_runs(trials: Trials) -> list:
    """The write-up's single runs beside ours: (run, key or None, why not comparable or None)."""
    out = []
    for run in writeup.RUNS:
        key = _runs_key(trials, run)
        why = None
        if key is None:
            why = "not run here"
        else:
            config = trials.config(key)
            why = trials.writeup_comparable(key)
            if why is None and config["steps"] != run.steps:
                why = f"{config['steps']} steps here, the write-up's {run.steps}"
        out.append((run, key, why))
    return out
