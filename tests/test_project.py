"Project-level checks: the package imports with its version, README is in step, the console scripts exist."
import configparser, os, subprocess, sys
from pathlib import Path
import simplelxmert

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def settings(): 
    c = configparser.ConfigParser(delimiters=['=']); c.read(ROOT/"settings.ini"); return c["DEFAULT"]

def test_version_matches_settings():
    assert simplelxmert.__version__ == settings()["version"]

def test_readme_in_step_with_index():
    r = subprocess.run([sys.executable, str(ROOT/"tools"/"readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_readme_quick_start_has_the_two_commands():
    text = (ROOT/"README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT/".ci"/"run").read_text()

def test_console_scripts_installed_and_answer_help():
    for spec in settings()["console_scripts"].split():
        name = spec.split("=")[0]
        r = subprocess.run([str(BIN/name), "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), (name, r.stderr)

# ---------------------------------------------------------------- the deploy workflow (issue 20)

def workflow(name):
    import yaml
    y = yaml.safe_load((ROOT/".github"/"workflows"/name).read_text())
    y["on"] = y.pop(True, y.get("on"))  # YAML 1.1 reads the key `on` as True
    return y

def pages_step():
    return next(s for s in workflow("deploy.yaml")["jobs"]["deploy"]["steps"] if "Pages for the gh-pages" in s.get("name", ""))

def test_workflows_are_valid_yaml_with_their_jobs():
    for name, job in (("deploy.yaml", "deploy"), ("test.yaml", "test")):
        y = workflow(name)
        assert y["on"] and y["jobs"][job]["runs-on"] and all("uses" in s or "run" in s for s in y["jobs"][job]["steps"]), name

def test_deploy_publishes_docs_then_turns_on_pages_for_gh_pages():
    y = workflow("deploy.yaml")
    steps = y["jobs"]["deploy"]["steps"]
    names = [s.get("name", "") for s in steps]
    publish = next(s for s in steps if "actions-gh-pages" in s.get("uses", ""))
    assert publish["with"]["publish_dir"] == "./_docs" and y["permissions"]["pages"] == "write"
    assert names.index(pages_step()["name"]) > steps.index(publish)  # the branch exists by then
    assert "settings > pages" in pages_step()["run"].lower()        # the one setting, when the token may not

def run_pages_step(tmp_path, pages_branch, post_ok=True):
    "Run the step's script with a stub `gh` that answers like GitHub; return (exit code, output, the gh calls)."
    log, stub = tmp_path/"gh.log", tmp_path/"gh"
    stub.write_text(f"""#!/bin/sh
echo "$@" >> "{log}"
case "$*" in
  "api repos/o/r/pages --jq"*) [ -n "{pages_branch}" ] && echo "{pages_branch}" && exit 0; echo 'HTTP 404' >&2; exit 1;;
  *) [ "{int(post_ok)}" = 1 ];;
esac
""")
    stub.chmod(0o755)
    r = subprocess.run(["bash", "-e", "-c", pages_step()["run"]], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin", "REPO": "o/r", "GH_TOKEN": "x"})
    return r.returncode, r.stdout + r.stderr, log.read_text().splitlines() if log.exists() else []

def test_pages_step_turns_pages_on_once(tmp_path):
    rc, out, calls = run_pages_step(tmp_path, "")
    assert rc == 0 and calls[-1].startswith("api -X POST repos/o/r/pages") and "source[branch]=gh-pages" in calls[-1], (out, calls)
    (tmp_path/"gh.log").unlink()
    rc, out, calls = run_pages_step(tmp_path, "gh-pages")
    assert rc == 0 and len(calls) == 1, (out, calls)                    # already on: nothing changed
    (tmp_path/"gh.log").unlink()
    rc, out, calls = run_pages_step(tmp_path, "main")
    assert rc == 0 and calls[-1].startswith("api -X PUT"), (out, calls)  # on, but for another branch
    (tmp_path/"gh.log").unlink()
    rc, out, calls = run_pages_step(tmp_path, "", post_ok=False)
    assert rc == 1 and "::error" in out and "gh-pages" in out, out      # the token may not: the setting is named
