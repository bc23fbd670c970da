#!/usr/bin/python3
"""Tests of runner.py's pure parts: test selection, TAP parsing, the suite patches, and the
check `report` makes (what fails a CI run and what does not). No root, no containers:
`python3 tests/runc-integration/test_runner.py` (scripts/runc-integration runs it first)."""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runner  # noqa: E402

INTEG = os.path.join(runner.UPSTREAM, "tests", "integration")


class Suite(unittest.TestCase):
    def test_every_test_is_found_once(self):
        tests = runner.list_tests(INTEG, None)
        self.assertEqual(len(tests), 191)  # runc v1.1.15: 191 @test in 37 files
        self.assertEqual(len(set(tests)), len(tests))
        self.assertEqual(len({f for f, _ in tests}), 37)

    def test_file_selection(self):
        self.assertEqual(runner.list_tests(INTEG, ["version"]),
                         [("version.bats", "runc version")])
        self.assertEqual(len(runner.list_tests(INTEG, ["tty.bats", "kill"])), 13)

    def test_filter_matches_exactly_one_name_in_bash(self):
        # bats applies --filter with bash's =~; names hold ( ) [ ] { } + . ' and spaces.
        for name in ["runc run [tty owner] ({u,g}id != 0)", "runc run",
                     "global --debug to --log --log-format 'json'",
                     "runc run [seccomp] (SCMP_ACT_NOTIFY noNewPrivileges false)"]:
            pattern = runner.bats_filter(name)
            for candidate, want in [(name, 0), (name + " x", 1), ("x " + name, 1)]:
                rc = subprocess.run(["bash", "-c", '[[ $1 =~ $2 ]]', "-", candidate, pattern]).returncode
                self.assertEqual(rc, want, (name, candidate))

    def test_patches_apply_to_the_vendored_helpers(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(INTEG, "helpers.bash")) as f:
                text = f.read()
            with open(os.path.join(d, "helpers.bash"), "w") as f:
                f.write(text)
            runner.patch_suite(d)
            with open(os.path.join(d, "helpers.bash")) as f:
                patched = f.read()
            self.assertEqual(patched.count("nvbind runner: wait for the socket"), 2)
            # A helpers.bash without the lines is refused, not silently left unpatched.
            with open(os.path.join(d, "helpers.bash"), "w") as f:
                f.write("# nothing\n")
            with self.assertRaises(SystemExit):
                runner.patch_suite(d)

    def test_work_dir_is_opened_to_the_mapped_root(self):
        # userns.bats mounts its bundles as uid 100000: mktemp's 0700 failed them for runc too.
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o700)
            work = os.path.join(d, "work")
            os.mkdir(work, 0o700)
            self.assertIn(d, runner.open_to_mapped_users(work))
            self.assertEqual(os.stat(work).st_mode & 0o777, 0o711)
            os.chmod(d, 0o755)
            self.assertNotIn(d, runner.open_to_mapped_users(work))


class Tap(unittest.TestCase):
    def test_results(self):
        self.assertEqual(runner.parse_tap("1..1\nok 1 runc run\n", "runc run"), ("pass", ""))
        self.assertEqual(runner.parse_tap("1..1\nnot ok 1 runc run\n# x\n", "runc run"),
                         ("fail", ""))
        self.assertEqual(
            runner.parse_tap("ok 1 a b # skip test requires cgroups_v2\n", "a b"),
            ("skip", "test requires cgroups_v2"))
        self.assertEqual(runner.parse_tap("ok 1 a # skip (old style)\n", "a"),
                         ("skip", "old style"))
        self.assertEqual(runner.parse_tap("ok 1 a # skip\n", "a"), ("skip", ""))
        self.assertEqual(runner.parse_tap("1..1\n", "a"), (None, ""))


def run_doc(label, results):
    return {"label": label, "runtime": f"/usr/bin/{label}", "version": f"{label} 1",
            "date": "d", "kernel": "k", "systemd_cgroup": False, "load": ["0", "0", "0"],
            "seconds": 1.0, "timeout": 60,
            "tests": [{"file": "a.bats", "name": n, "result": r, "reason": "", "seconds": 0.1,
                       "cleanup": [], "output": ""} for n, r in results.items()]}


class Report(unittest.TestCase):
    def report(self, ref, cand, expected="", reasons=""):
        with tempfile.TemporaryDirectory() as d:
            for name, doc in (("r.json", ref), ("c.json", cand)):
                with open(os.path.join(d, name), "w") as f:
                    json.dump(doc, f)
            with open(os.path.join(d, "expected-failures.tsv"), "w") as f:
                f.write("# comment\n" + expected)
            with open(os.path.join(d, "runc-reasons.tsv"), "w") as f:
                f.write(reasons)
            args = runner.argparse.Namespace(
                reference=os.path.join(d, "r.json"), candidate=os.path.join(d, "c.json"),
                expect=d, out=os.path.join(d, "RESULTS.md"))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = runner.cmd_report(args)
            with open(args.out) as f:
                md = f.read()
            return rc, out.getvalue(), md

    def test_a_new_failure_fails(self):
        rc, out, md = self.report(run_doc("runc", {"t1": "pass", "t2": "pass"}),
                                  run_doc("nvbind", {"t1": "pass", "t2": "fail"}))
        self.assertEqual(rc, 1)
        self.assertIn("NEW FAILURE: a.bats: t2", out)
        self.assertIn("NEW failure", md)
        self.assertTrue(out.rstrip().endswith("1 passed, 1 failed, 0 skipped"))

    def test_a_listed_failure_passes_the_check(self):
        rc, out, md = self.report(run_doc("runc", {"t1": "pass", "t2": "pass"}),
                                  run_doc("nvbind", {"t1": "pass", "t2": "timeout"}),
                                  "a.bats\tt2\tcli\tit hangs\tsrc/x.rs\n")
        self.assertEqual(rc, 0, out)
        self.assertIn("nvbind [cli]: it hangs (src/x.rs)", md)
        self.assertIn("| cli | 1 |", md)

    def test_a_skip_where_runc_passes_counts_as_a_failure(self):
        rc, out, _ = self.report(run_doc("runc", {"t1": "pass"}), run_doc("nvbind", {"t1": "skip"}))
        self.assertEqual(rc, 1)
        self.assertIn("NEW FAILURE", out)

    def test_a_fixed_test_still_listed_fails(self):
        rc, out, _ = self.report(run_doc("runc", {"t1": "pass"}), run_doc("nvbind", {"t1": "pass"}),
                                 "a.bats\tt1\tseccomp\twas broken\tsrc/y.rs\n")
        self.assertEqual(rc, 1)
        self.assertIn("FIXED: a.bats: t1", out)

    def test_flaky_entries_may_pass(self):
        rc, out, _ = self.report(run_doc("runc", {"t1": "pass"}), run_doc("nvbind", {"t1": "pass"}),
                                 "a.bats\tt1\tflaky:terminal\tsometimes\tsrc/z.rs\n")
        self.assertEqual(rc, 0, out)

    def test_failures_runc_shares_are_not_nvbinds(self):
        rc, out, md = self.report(run_doc("runc", {"t1": "fail", "t2": "fail"}),
                                  run_doc("nvbind", {"t1": "fail", "t2": "pass"}),
                                  reasons="a.bats\tt1\tenvironment: no hugetlb\n")
        self.assertEqual(rc, 0, out)
        self.assertIn("runc: environment: no hugetlb", md)
        self.assertIn("runc: UNEXPLAINED", md)  # t2 has no reason
        self.assertIn("does not say why", out)

    def test_bad_lists_are_refused(self):
        ref, cand = run_doc("runc", {"t1": "pass"}), run_doc("nvbind", {"t1": "fail"})
        for bad in ["a.bats\tt1\tcli\tonly four columns\n",
                    "a.bats\tt1\tnot-a-cause\tsymptom\tsrc\n",
                    "a.bats\tt1\tcli\ts\tsrc\na.bats\tt1\tcli\ts\tsrc\n"]:
            with self.assertRaises(SystemExit):
                self.report(ref, cand, bad)


if __name__ == "__main__":
    unittest.main()
