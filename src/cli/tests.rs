//! The deferred verbs (issue 19): an invocation builds the arguments of its own verb only, and
//! the command line means what it meant when every verb was built up front.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;

use clap::{CommandFactory as _, FromArgMatches as _, Parser as _};

use super::Cli;

/// The path of every command below `cmd` ("cdi generate"), parents first; clap's own `help`
/// subcommand left out.
fn paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_string());
        out.push(path.clone());
        paths(sub, &path, out);
    }
}

fn find<'a>(mut cmd: &'a clap::Command, path: &[String]) -> &'a clap::Command {
    for name in path {
        cmd = cmd.find_subcommand(name).unwrap();
    }
    cmd
}

/// The whole tree built, as it was built for every invocation before the verbs were deferred.
fn built() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli
}

#[test]
fn a_verb_gets_its_arguments_only_when_invoked() {
    let mut cli = Cli::command();
    let verbs: Vec<String> = cli
        .get_subcommands()
        .map(|v| v.get_name().to_string())
        .collect();
    assert!(verbs.len() > 20, "{verbs:?}");
    for verb in cli.get_subcommands() {
        assert_eq!(
            verb.get_arguments().count(),
            0,
            "{} was built before it was invoked",
            verb.get_name()
        );
    }
    cli.try_get_matches_from_mut(["nvbind", "--root", "/r", "state", "x"])
        .unwrap();
    for verb in cli.get_subcommands() {
        let has_args = verb.get_arguments().any(|a| a.get_id() == "id");
        assert_eq!(has_args, verb.get_name() == "state", "{}", verb.get_name());
    }
    // The same below `cdi`.
    let mut cli = Cli::command();
    cli.try_get_matches_from_mut(["nvbind", "cdi", "list"])
        .unwrap();
    let cdi = cli.find_subcommand("cdi").unwrap();
    for sub in cdi.get_subcommands().filter(|s| s.get_name() != "help") {
        let has_args = sub.get_arguments().count() > 0;
        assert_eq!(has_args, sub.get_name() == "list", "cdi {}", sub.get_name());
    }
}

/// What a verb's variant in the enum sets on its command (its doc comment: about and
/// long_about, and its #[command]) that a struct-level #[command] or doc comment of its Args
/// (or of an Args flattened into them) could set too. Built eagerly, the variant's came last;
/// deferred, the Args' do: the two agree only where the Args set none of these. Those the
/// variants leave unset (before/after help, aliases, version) the Args may set.
fn variant_attrs(c: &clap::Command) -> Vec<Option<String>> {
    let s = |v: Option<&clap::builder::StyledStr>| v.map(ToString::to_string);
    vec![
        s(c.get_about()),
        s(c.get_long_about()),
        Some(c.is_hide_set().to_string()),
        s(c.get_before_help()),
        s(c.get_before_long_help()),
        s(c.get_after_help()),
        s(c.get_after_long_help()),
        Some(format!("{:?}", c.get_all_aliases().collect::<Vec<_>>())),
        c.get_version().map(str::to_string),
        c.get_long_version().map(str::to_string),
    ]
}

/// Whether building `shell` (the variant's attributes alone) into `built` changed what the
/// variant set: about, long_about and hide always count (a doc comment sets both abouts, the
/// one-line one long_about to None), the rest where the variant set them.
fn overridden(shell: &[Option<String>], built: &[Option<String>]) -> bool {
    shell
        .iter()
        .zip(built)
        .enumerate()
        .any(|(i, (s, b))| s != b && (i < 3 || s.is_some()))
}

#[test]
fn deferred_verbs_are_built_as_eagerly_built_ones() {
    let lazy = Cli::command();
    let full = built();
    let mut all = Vec::new();
    paths(&full, &[], &mut all);
    assert!(all.iter().any(|p| p == &["cdi", "resolve"]), "{all:?}");
    let mut differ = Vec::new();
    for path in &all {
        // A command whose parent is not built yet cannot be looked up in `lazy`: it is built
        // with its parent (snapshot's subcommands), like everything else of its parent.
        let Some(shell) = path
            .iter()
            .try_fold(&lazy, |c, name| c.find_subcommand(name))
        else {
            continue;
        };
        let (before, after) = (variant_attrs(shell), variant_attrs(find(&full, path)));
        if overridden(&before, &after) {
            let path = path.join(" ");
            differ.push(format!("nvbind {path}: {before:?}\n  built: {after:?}"));
        }
    }
    // A doc comment on an Args struct sets about/long_about too, also on a flattened one.
    assert!(
        differ.is_empty(),
        "the Args (or an Args flattened into them) set what the variant sets:\n{}",
        differ.join("\n")
    );
}

#[test]
fn help_knows_every_command() {
    // clap copies the command tree (names, abouts) for its `help` subcommand when it builds a
    // command, before the deferred verbs below it are built: a subcommand that exists only
    // once its verb is built would be missing from `nvbind help VERB <TAB>` and the completion
    // scripts.
    let full = built();
    let (mut all, mut helped) = (Vec::new(), Vec::new());
    paths(&full, &[], &mut all);
    let help = full.find_subcommand("help").unwrap();
    for sub in help.get_subcommands().filter(|s| s.get_name() != "help") {
        let path = vec![sub.get_name().to_string()];
        helped.push(path.clone());
        paths(sub, &path, &mut helped);
    }
    all.sort();
    helped.sort();
    assert_eq!(helped, all);
}

/// A parse as the program sees it: the value, or the error's kind and full text (the first
/// line of which main prints; --help and --version are errors that print to stdout).
fn outcome(r: Result<Cli, clap::Error>) -> String {
    match r {
        Ok(cli) => format!("ok {cli:?}"),
        Err(e) => format!("{:?} {}\n{}", e.kind(), e.use_stderr(), e.render()),
    }
}

#[test]
fn every_command_line_parses_as_with_the_whole_tree_built() {
    let full = built();
    let mut argvs: Vec<Vec<OsString>> = [
        &["state", "x"][..],
        &["--root", "/r", "state", "x"],
        &[
            "--root=/r",
            "--debug",
            "--log",
            "/l",
            "--log-format",
            "json",
            "list",
        ],
        &[
            "--systemd-cgroup",
            "--rootless",
            "true",
            "--cdi-spec-dir",
            "/a",
            "--cdi-spec-dir=/b",
            "ps",
            "x",
        ],
        &["--criu", "/c", "checkpoint", "--image-path", "i", "x"],
        // runc's global options after the verb are not global here: an error, as before
        &["state", "--root", "/r", "x"],
        &[
            "create",
            "--bundle",
            "b",
            "--pid-file",
            "p",
            "--console-socket",
            "s",
            "id",
        ],
        &[
            "create",
            "-b",
            "b",
            "--preserve-fds",
            "2",
            "--no-pivot",
            "--no-new-keyring",
            "id",
        ],
        &["create", "-b", "b", "--", "-id"],
        &["create", "--preserve-fds", "x", "id"],
        &["run", "-d", "--bundle", "b", "x"],
        &["start", "x"],
        &["kill", "x"],
        &["kill", "--all", "x", "KILL"],
        &["kill", "x", "9", "extra"],
        &["delete", "--force", "x"],
        &["exec", "--tty", "x", "sh", "-c", "echo"],
        &["exec", "x", "--", "ls", "-l"],
        &["exec", "-e", "A=1", "--cwd", "/", "x", "true"],
        &["exec", "--process", "p.json", "x"],
        &["list", "--format", "json"],
        &["list", "-q"],
        &["events", "--stats", "x"],
        &["update", "--memory", "1g", "x"],
        &["update", "-r", "-", "x"],
        &["pause", "x"],
        &["resume", "x"],
        &["restore", "--image-path", "i", "-b", "b", "x"],
        &["spec", "--rootless"],
        &["features"],
        &["info", "--format", "json"],
        &["doctor", "--format", "json"],
        &["completion", "bash"],
        &["completion", "tcsh"],
        &["man", "--output-dir", "d"],
        &["setup", "docker"],
        &["snapshot", "create", "x", "s1", "--keep", "3"],
        &["snapshot", "list", "x"],
        &["snapshot"],
        &["cdi"],
        &["cdi", "list"],
        &[
            "cdi",
            "generate",
            "--vendor",
            "nvidia,amd",
            "--format",
            "json",
        ],
        &["cdi", "resolve", "-b", "x"],
        &["cdi", "bogus"],
        // unknown, misspelt, missing and surplus words
        &[],
        &[""],
        &["foo"],
        &["foo", "-h"],
        &["stat", "x"],
        &["STATE", "x"],
        &["state"],
        &["state", "a", "b"],
        &["--bogus", "state", "x"],
        &["state", "--bogus", "x"],
        &["--root"],
        &["--log-format", "yaml", "list"],
        &["--", "state", "x"],
        &["state", "--", "x"],
        &["state", "--", "--weird"],
        &["-", "state"],
        // help and version, in every place they can be asked for
        &["-v"],
        &["-V"],
        &["--version"],
        &["--help"],
        &["-h"],
        &["help"],
        &["help", "create"],
        &["help", "cdi", "generate"],
        &["help", "nosuch"],
        &["--root", "/r", "--help"],
        &["state", "--version"],
    ]
    .iter()
    .map(|a| a.iter().map(OsString::from).collect())
    .collect();
    // an argument that is not UTF-8
    argvs.push(vec!["state".into(), OsString::from_vec(vec![b'x', 0xff])]);
    argvs.push(vec![OsString::from_vec(vec![0xff])]);
    // every command's help, short and long
    let mut all = Vec::new();
    paths(&full, &[], &mut all);
    for path in all {
        for flag in ["-h", "--help"] {
            let mut argv: Vec<OsString> = path.iter().map(OsString::from).collect();
            argv.push(flag.into());
            argvs.push(argv);
        }
    }
    for args in argvs {
        let argv: Vec<OsString> = std::iter::once("nvbind".into()).chain(args).collect();
        let lazy = outcome(Cli::try_parse_from(&argv));
        let eager = outcome(
            full.clone()
                .try_get_matches_from(&argv)
                .and_then(|m| Cli::from_arg_matches(&m)),
        );
        assert_eq!(lazy, eager, "{argv:?}");
    }
}
