"""Tests of the bench harness's pure parts: statistics, targets and verdicts, the report, the
metrics parser, the FIFO marker. Run: python3 -m unittest discover -s bench/tests"""

import os
import sys
import tempfile
import threading
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import berth, measure, report  # noqa: E402
from lib.cleanup import Cleanup  # noqa: E402


def metric(b, p=None, lower=True, target=None, stat=None, unit="s"):
    m = {"name": "m", "unit": unit, "lower_is_better": lower, "berth": measure.summary(b),
         "peer": measure.summary(p or []), "peer_name": "peer" if p else None,
         "samples": {"berth": b, "peer": p or []}}
    if target:
        m["target"] = target
    if stat:
        m["stat"] = stat
    m["ratio"] = report.ratio_of(m)
    m["verdict"] = report.verdict(m)
    return m


class Stats(unittest.TestCase):
    def test_percentile_is_nearest_rank(self):
        s = list(range(1, 101))
        self.assertEqual(measure.percentile(s, 99), 99)
        self.assertEqual(measure.percentile(s, 50), 50)
        self.assertEqual(measure.percentile([5, 1, 3], 99), 5)

    def test_summary(self):
        s = measure.summary([3.0, 1.0, 2.0])
        self.assertEqual((s["median"], s["min"], s["max"], s["n"]), (2.0, 1.0, 3.0, 3))
        self.assertIsNone(measure.summary([]))


class Verdicts(unittest.TestCase):
    def test_ratio_is_berth_over_peer(self):
        self.assertAlmostEqual(metric([1.0], [4.0])["ratio"], 0.25)
        self.assertAlmostEqual(metric([8.0], [4.0], lower=False, unit="Gbit/s")["ratio"], 2.0)

    def test_absolute_max(self):
        self.assertEqual(metric([0.010, 0.012], target={"text": "", "max": 0.020})["verdict"], "met")
        v = metric([0.030, 0.031], target={"text": "", "max": 0.020})["verdict"]
        self.assertTrue(v.startswith("MISSED: median 30.5 ms > 20 ms"), v)

    def test_ratio_targets(self):
        self.assertEqual(metric([1.0], [20.0], target={"text": "", "ratio_max": 1 / 15})["verdict"], "met")
        v = metric([1.0], [10.0], target={"text": "", "ratio_max": 1 / 15})["verdict"]
        self.assertIn("berth is 10x better, the target asks 15x", v)
        self.assertTrue(metric([9.0], [10.0], lower=False, target={"text": "", "ratio_min": 0.95})["verdict"].startswith("MISSED"))
        self.assertEqual(metric([9.6], [10.0], lower=False, target={"text": "", "ratio_min": 0.95})["verdict"], "met")

    def test_equals_checks_every_sample(self):
        self.assertEqual(metric([1, 1, 1], target={"text": "", "equals": 1})["verdict"], "met")
        self.assertTrue(metric([1, 2, 1], target={"text": "", "equals": 1})["verdict"].startswith("MISSED: 1 of 3"))

    def test_p99_stat_is_judged(self):
        m = metric([0.01] * 99 + [0.5], target={"text": "", "max": 0.1}, stat="p99")
        self.assertEqual(m["verdict"], "met")
        m = metric([0.01] * 98 + [0.5, 0.5], target={"text": "", "max": 0.1}, stat="p99")
        self.assertTrue(m["verdict"].startswith("MISSED: p99"))

    def test_quick_mode_target_is_text_only(self):
        self.assertIsNone(metric([1.0], target={"text": "< 2 s (not judged in quick mode)"})["verdict"])

    def test_ratio_without_peer_is_a_miss(self):
        self.assertTrue(metric([1.0], target={"text": "", "ratio_max": 1})["verdict"].startswith("MISSED"))


class Rendering(unittest.TestCase):
    def results(self):
        return {"date": "d", "quick": False, "profile": "release", "machine": {}, "versions": {"podman": "4.3"},
                "order": ["a", "b"], "scenarios": {
                    "a": {"title": "A", "description": "desc", "metrics": [
                        metric([1.0], [20.0], target={"text": "15x", "ratio_max": 1 / 15}),
                        metric([5.0], [4.0], unit="MB", target={"text": "below", "ratio_max": 1})]},
                    "b": {"title": "B", "description": "d", "error": "Unavailable: no agent", "metrics": []}}}

    def test_markdown_states_targets_and_failures(self):
        md = report.render(self.results(), chart="ratios.svg")
        self.assertIn("![berth/peer per metric](ratios.svg)", md)
        self.assertIn("| `a` | m | 15x | met |", md)
        self.assertIn("MISSED: berth/peer 1.25, needs <= 1", md)
        self.assertIn("DID NOT RUN: Unavailable: no agent", md)
        self.assertIn("0.05 (20x faster)", md)
        self.assertIn("1.25 (1.25x more)", md)

    def test_headlines_come_first_and_every_figure_names_its_run(self):
        res = self.results()
        res["scenarios"]["a"].update({"when": "2026-01-02 03:04 UTC", "run": "r2", "commit": "c2",
                                      "quick": False, "profile": "release"})
        res["scenarios"]["b"].update({"when": "2026-01-01 00:00 UTC", "run": "r1", "commit": "c1",
                                      "quick": False, "profile": "release"})
        idle = metric([0.018], [0.120], target={"text": "15x", "ratio_max": 1 / 15})
        idle.update({"name": "after idle", "headline": True, "peer_name": "podman, after idle"})
        res["scenarios"]["a"]["metrics"].insert(1, idle)
        md = report.render(res)
        # The headline section sits above the targets, with both figures, the ratio and the run.
        head = md.index("## Headline figures")
        self.assertLess(head, md.index("## Targets"))
        row = next(line for line in md.splitlines() if line.startswith("| `a` | after idle |"))
        self.assertIn("18 ms", row)
        self.assertIn("podman, after idle: 120 ms", row)
        self.assertIn("0.15 (6.67x faster)", row)
        self.assertIn("MISSED", row)
        self.assertIn("run `r2`, berth `c2`", row)
        # Only marked metrics are headlines.
        self.assertEqual(md[head:md.index("## Reading")].count("| `a` |"), 1)
        # Every run is listed with the scenarios it gave, and each section names its own.
        self.assertIn("- 2026-01-02 03:04 UTC, run `r2`, berth `c2`, full, release build: `a`", md)
        self.assertIn("- 2026-01-01 00:00 UTC, run `r1`, berth `c1`, full, release build: `b`", md)
        self.assertIn("Measured 2026-01-02 03:04 UTC in run `r2`, berth `c2`, release build.", md)

    def test_chart_has_one_bar_per_ratio(self):
        res = self.results()
        res["scenarios"]["a"]["metrics"].append(metric([3.0], [2.0]))
        svg = report.chart(res)
        self.assertTrue(svg.startswith("<svg"))
        self.assertEqual(svg.count('fill="#2e9d4a"'), 1)  # better, target met
        self.assertEqual(svg.count('fill="#e8a33d"'), 1)  # target missed
        self.assertEqual(svg.count('fill="#d0433a"'), 1)  # worse, no target


class Metrics(unittest.TestCase):
    def test_prometheus_text(self):
        m = berth.parse_metrics("# HELP x\nberth_reconcile_passes_total 7\n"
                                "berth_reconcile_pass_duration_seconds_sum 0.25\n"
                                'berth_containers{state="running"} 3\n')
        self.assertEqual(m["berth_reconcile_passes_total"], 7)
        self.assertEqual(m['berth_containers{state="running"}'], 3)
        m = berth.parse_metrics('berth_reconcile_passes_total{host_id="h1"} 7\n'
                                'berth_containers{host_id="h1",state="running"} 3\n')
        self.assertEqual(m["berth_reconcile_passes_total"], 7)
        self.assertEqual(m['berth_containers{state="running"}'], 3)


class Markers(unittest.TestCase):
    def test_tags_from_several_writers(self):
        with tempfile.TemporaryDirectory() as d:
            mk = measure.Marker(d)
            try:
                def write(tag):
                    fd = os.open(mk.path, os.O_WRONLY)
                    os.write(fd, f"{tag}\n".encode())
                    os.close(fd)

                threads = [threading.Thread(target=write, args=(f"t{i}",)) for i in range(20)]
                for t in threads:
                    t.start()
                mk.wait([f"t{i}" for i in range(20)], 10)
                for t in threads:
                    t.join()
                with self.assertRaises(TimeoutError):
                    mk.wait(["never"], 0.05)
            finally:
                mk.close()


class Cleanups(unittest.TestCase):
    def test_every_step_runs_in_reverse_despite_failures(self):
        c, ran = Cleanup(), []
        c.push("a", ran.append, "a")
        c.push("b", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
        c.push("c", ran.append, "c")
        failed = c.run_all()
        self.assertEqual(ran, ["c", "a"])
        self.assertEqual(len(failed), 1)
        self.assertIn("boom", failed[0])


if __name__ == "__main__":
    unittest.main()
