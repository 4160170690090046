//! The docs stay true: every `fer ...` command in the repository's Markdown
//! parses with the current command line (clap's own parser; nothing runs),
//! every relative link and image exists inside the repository, and no page
//! names a tracker issue or a path outside the repository.
//!
//! Commands in code blocks are parsed whole. A synopsis (`[--flag N]`,
//! `a | b`, `DIR...`) and a command named in prose are checked by name: each
//! subcommand and flag must exist where it is written.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::CommandFactory;
use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use regex::Regex;
use std::path::{Path, PathBuf};

/// One thing wrong in one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
    }
}

/// The pages checked: README.md and every Markdown file under docs/,
/// models/, experiments/ and reports/.
pub fn pages(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.join("README.md")];
    for dir in ["docs", "models", "experiments", "reports"] {
        collect_md(&root.join(dir), &mut out);
    }
    out.retain(|p| p.is_file());
    out.sort();
    out
}

fn collect_md(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_md(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// Checks every page under `root`; problems name the file relative to it.
pub fn check(root: &Path) -> Vec<Problem> {
    let root = root.canonicalize().expect("the repository root exists");
    pages(&root)
        .iter()
        .flat_map(|p| check_page(&root, p))
        .collect()
}

/// Checks one page.
pub fn check_page(root: &Path, file: &Path) -> Vec<Problem> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let rel = file.strip_prefix(root).unwrap_or(file).to_path_buf();
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut problems = Vec::new();
    let mut push = |line: usize, what: String| {
        problems.push(Problem {
            file: rel.clone(),
            line,
            what,
        })
    };

    for (n, line) in text.lines().enumerate() {
        for what in forbidden(line) {
            push(n + 1, what);
        }
    }

    let src = Regex::new(r#"(?:src|href)="([^"]+)""#).unwrap();
    // A code block's text may come in several events: gather it, with the
    // offset it starts at, and check it at the block's end.
    let mut block: Option<(usize, String)> = None;
    let mut shell_block = false;
    let parser = Parser::new_ext(&text, Options::all()).into_offset_iter();
    for (event, range) in parser {
        match event {
            Event::Start(Tag::CodeBlock(kind)) => {
                shell_block = match kind {
                    CodeBlockKind::Fenced(lang) => {
                        matches!(&*lang, "" | "sh" | "bash" | "shell" | "console")
                    }
                    CodeBlockKind::Indented => true,
                };
                block = None;
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((start, body)) = block.take() {
                    let first = line_of(start);
                    for (i, cmd) in logical_lines(&body) {
                        for what in check_command(&cmd, false) {
                            push(first + i, what);
                        }
                    }
                }
                shell_block = false;
            }
            Event::Text(t) if shell_block => match &mut block {
                Some((_, body)) => body.push_str(&t),
                None => block = Some((range.start, t.to_string())),
            },
            Event::Code(c) => {
                for what in check_command(&c, true) {
                    push(line_of(range.start), what);
                }
            }
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => {
                if let Some(what) = check_link(root, file, &dest_url) {
                    push(line_of(range.start), what);
                }
            }
            Event::Html(h) | Event::InlineHtml(h) => {
                for c in src.captures_iter(&h) {
                    if let Some(what) = check_link(root, file, &c[1]) {
                        push(line_of(range.start), what);
                    }
                }
            }
            _ => {}
        }
    }
    problems
}

/// What a reader of the repository cannot follow: tracker issue numbers and
/// paths outside the repository.
fn forbidden(line: &str) -> Vec<String> {
    let issue = Regex::new(r"(?i)\bissues?\s+#?\d+\b|(^|\s)#\d+\b").unwrap();
    let outside = Regex::new(r"\.\./shared\b|/work/").unwrap();
    let mut out = Vec::new();
    if let Some(m) = issue.find(line) {
        out.push(format!(
            "names a tracker issue ({:?}): say what changed instead",
            m.as_str().trim()
        ));
    }
    if let Some(m) = outside.find(line) {
        out.push(format!(
            "names a path outside the repository ({:?})",
            m.as_str()
        ));
    }
    out
}

/// A code block's commands, each with its line index: continuation lines
/// (`\` at the end) joined, prompts (`$ `) and comment lines dropped.
fn logical_lines(block: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in block.lines().enumerate() {
        let line = raw.trim();
        let line = line.strip_prefix("$ ").unwrap_or(line);
        let (start, mut text) = match current.take() {
            Some((s, t)) => (s, t + " " + line),
            None => (i, line.to_string()),
        };
        if text.ends_with('\\') {
            text.pop();
            current = Some((start, text));
            continue;
        }
        if !text.is_empty() && !text.starts_with('#') {
            out.push((start, text));
        }
    }
    out.extend(current);
    out
}

/// Drops a trailing ` # comment` outside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return &line[..i];
            }
            _ => {}
        }
    }
    line
}

/// The problems of one command line (none when it is not a `fer` command).
/// `prose`: named in running text, so checked by name only.
pub fn check_command(line: &str, prose: bool) -> Vec<String> {
    let line = strip_comment(line).trim();
    let Some(tokens) = shlex::split(line).or_else(|| {
        // An unbalanced quote in a synopsis: split on spaces.
        Some(line.split_whitespace().map(String::from).collect())
    }) else {
        return vec![];
    };
    let synopsis = prose
        || tokens
            .iter()
            .any(|t| t.contains('[') || t.contains("...") || t.contains('<') || t == "|");
    // Each shell segment (`a | b`, `a && b`, `a; b`) on its own.
    let mut problems = Vec::new();
    let mut segment: Vec<String> = Vec::new();
    let mut flush = |segment: &mut Vec<String>| {
        if let Some(args) = fer_args(segment) {
            problems.extend(if synopsis {
                check_names(&args)
            } else {
                check_parse(&args)
            });
        }
        segment.clear();
    };
    for t in tokens {
        let separator = matches!(t.as_str(), "&&" | "||" | ";" | "&") || (!synopsis && t == "|");
        if separator {
            flush(&mut segment);
        } else if !synopsis && (t.starts_with('>') || t.starts_with("2>") || t.starts_with('<')) {
            // A redirection ends the arguments.
            flush(&mut segment);
            segment.push("#".into());
        } else {
            segment.push(t);
        }
    }
    flush(&mut segment);
    problems
}

/// The arguments after `fer` when the segment runs fer (after `VAR=value`
/// assignments and wrappers such as `nohup`), else None.
fn fer_args(segment: &[String]) -> Option<Vec<String>> {
    if segment.first().is_some_and(|t| t == "#") {
        return None;
    }
    let mut i = 0;
    while i < segment.len() {
        let t = segment[i].as_str();
        let assignment = t.contains('=') && !t.starts_with('-') && !t.contains('/');
        if assignment || matches!(t, "nohup" | "time" | "env" | "exec" | "sudo") {
            i += 1;
            continue;
        }
        break;
    }
    let prog = segment.get(i)?;
    let is_fer = prog == "fer" || prog.ends_with("/fer") || prog == "$(FER)";
    is_fer.then(|| segment[i + 1..].to_vec())
}

/// A placeholder a reader replaces (`N`, `DIR`, `RUN_DIR`).
fn placeholder(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_.-,".contains(c))
        && v.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

/// A command from a code block, parsed by clap as `fer` would.
fn check_parse(args: &[String]) -> Vec<String> {
    let argv = std::iter::once("fer".to_string()).chain(args.iter().cloned());
    let Err(e) = fer::cli::Cli::command().try_get_matches_from(argv) else {
        return vec![];
    };
    let only_subcommands = walk(args).1 == args.len();
    let tolerated = match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => true,
        // `fer sweep` alone in a block still names a command.
        ErrorKind::MissingRequiredArgument
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => only_subcommands,
        // `--limit N`: a value the reader fills in.
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => matches!(
            e.get(ContextKind::InvalidValue),
            Some(ContextValue::String(v)) if placeholder(v)
        ),
        _ => false,
    };
    if tolerated {
        return vec![];
    }
    let msg = e.to_string();
    let first = msg
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ");
    vec![format!("`fer {}` does not parse: {first}", args.join(" "))]
}

/// Descends subcommands named at the start of `args`; returns the command
/// reached and how many arguments named it.
fn walk(args: &[String]) -> (clap::Command, usize) {
    let mut cmd = fer::cli::Cli::command();
    cmd.build();
    let mut used = 0;
    for a in args {
        match cmd.find_subcommand(a) {
            Some(sub) => {
                let sub = sub.clone();
                cmd = sub;
                used += 1;
            }
            None => break,
        }
    }
    (cmd, used)
}

/// A synopsis or a command in prose: its subcommands exist, and each flag
/// exists on the subcommand it follows (`a | b` switches between siblings).
fn check_names(args: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let root = {
        let mut c = fer::cli::Cli::command();
        c.build();
        c
    };
    // The chain of commands from the root to the current one.
    let mut chain = vec![root];
    let mut after_bar = false;
    let mut expect_sub = true;
    for raw in args {
        let t = raw.trim_matches(|c| "[](){}".contains(c));
        let current = chain.last().expect("root");
        if raw == "|" {
            after_bar = true;
            continue;
        }
        if after_bar && chain.len() > 1 {
            // `up ... | down`: a sibling of the current subcommand.
            if let Some(sib) = chain[chain.len() - 2].find_subcommand(t).cloned() {
                chain.pop();
                chain.push(sib);
                after_bar = false;
                continue;
            }
        }
        after_bar = false;
        if expect_sub {
            if current.has_subcommands() && placeholder(t) {
                // `fer COMMAND --help`: any subcommand; nothing to check.
                return problems;
            }
            if let Some(sub) = current.find_subcommand(t).cloned() {
                chain.push(sub);
                continue;
            }
            if current.has_subcommands() && !t.starts_with('-') && !t.is_empty() {
                problems.push(format!(
                    "`fer {}`: no subcommand `{t}` (known: {})",
                    args.join(" "),
                    current
                        .get_subcommands()
                        .map(|s| s.get_name().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return problems;
            }
            expect_sub = false;
        }
        for flag in t.split('|') {
            let flag = flag.split('=').next().unwrap_or("");
            let known = if let Some(long) = flag.strip_prefix("--") {
                long.is_empty()
                    || chain
                        .iter()
                        .any(|c| c.get_arguments().any(|a| a.get_long() == Some(long)))
                    || matches!(long, "help" | "version")
            } else if let Some(short) = flag.strip_prefix('-') {
                let mut cs = short.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) if c.is_ascii_alphabetic() => {
                        chain
                            .iter()
                            .any(|cmd| cmd.get_arguments().any(|a| a.get_short() == Some(c)))
                            || c == 'h'
                    }
                    _ => true,
                }
            } else {
                true
            };
            if !known {
                let at = chain
                    .iter()
                    .map(|c| c.get_name().to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                problems.push(format!("`{at}` has no flag `{flag}`"));
            }
        }
    }
    problems
}

/// A relative link or image path that does not exist, or leaves the
/// repository.
fn check_link(root: &Path, file: &Path, dest: &str) -> Option<String> {
    if dest.is_empty()
        || dest.starts_with('#')
        || dest.contains("://")
        || dest.starts_with("mailto:")
    {
        return None;
    }
    let path = dest.split(['#', '?']).next().unwrap_or(dest);
    let target = if let Some(abs) = path.strip_prefix('/') {
        root.join(abs)
    } else {
        file.parent().expect("a page is in a folder").join(path)
    };
    match target.canonicalize() {
        Err(_) => Some(format!("link to a missing file: {dest}")),
        Ok(t) if !t.starts_with(root) => {
            Some(format!("link to a path outside the repository: {dest}"))
        }
        Ok(_) => None,
    }
}

#[test]
fn every_page_parses_links_and_stays_in_the_repository() {
    let problems = check(&crate::common::repo());
    assert!(
        problems.is_empty(),
        "{} problems in the docs:\n{}",
        problems.len(),
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn planted_mistakes_are_each_found_with_their_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("docs/images")).unwrap();
    std::fs::write(tmp.path().join("docs/images/ok.png"), b"png").unwrap();
    std::fs::write(
        tmp.path().join("README.md"),
        "# t\n\nSee [the guide](docs/guide.md).\n",
    )
    .unwrap();
    let page = "# Guide\n\
        \n\
        ```sh\n\
        fer train configs/cnn.yaml --set train.epochs=2\n\
        fer eval runs/cnn --tta --no-such-flag\n\
        FER_THREADS=2 nohup fer sweep experiments/quick.yaml \\\n\
            --workers 2 > sweep.log 2>&1 &\n\
        fer serve --modle models/x.safetensors\n\
        ```\n\
        \n\
        Synopsis: `fer quantize MODEL --out FILE [--calibraton 1024]`, and\n\
        `fer sweep --status DIR` is fine; `fer evaluate x` is not.\n\
        ![ok](images/ok.png) ![gone](images/gone.png) [up](../README.md)\n\
        As decided in issue 37, and in #12.\n";
    std::fs::write(tmp.path().join("docs/guide.md"), page).unwrap();
    let problems = check(tmp.path());
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.what.as_str())).collect();
    let expect = [
        (5, "--no-such-flag"),
        (8, "--modle"),
        (11, "--calibraton"),
        (12, "no subcommand `evaluate`"),
        (13, "images/gone.png"),
        (14, "tracker issue"),
    ];
    for (line, needle) in expect {
        assert!(
            got.iter().any(|(l, w)| *l == line && w.contains(needle)),
            "expected line {line} with {needle:?} in {got:#?}"
        );
    }
    // Line 14's two references are one finding; nothing else is reported.
    assert_eq!(problems.len(), expect.len(), "{got:#?}");
    assert!(problems
        .iter()
        .all(|p| p.file == Path::new("docs/guide.md")));
    // A link that leaves the repository is refused too.
    std::fs::write(
        tmp.path().join("docs/guide.md"),
        "[data](../../elsewhere/x.md) and `../shared/fer2013`\n",
    )
    .unwrap();
    let problems = check(tmp.path());
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

/// The seconds docs/zoo.md's results table gives the family's convergence
/// run, written `(N s)` in its row.
fn zoo_seconds(zoo: &str, family: &str) -> f64 {
    let line = zoo
        .lines()
        .find(|l| l.starts_with("| ") && l.contains(&format!("`configs/{family}.yaml`")))
        .unwrap_or_else(|| panic!("docs/zoo.md has no results row for {family}"));
    let (before, _) = line
        .split_once(" s)")
        .unwrap_or_else(|| panic!("docs/zoo.md's {family} row gives no `(N s)`: {line}"));
    before.rsplit('(').next().unwrap().parse().unwrap()
}

/// `2 h 6 min`, `33 min`: a duration as the README writes it.
fn duration(seconds: f64) -> String {
    let minutes = (seconds / 60.0).round() as u64;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, m) => format!("{h} h {m} min"),
    }
}

#[test]
fn the_readme_results_table_equals_its_sources() {
    let repo = crate::common::repo();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("docs/report-zoo/summary.json")).unwrap())
            .unwrap();
    let zoo = std::fs::read_to_string(repo.join("docs/zoo.md")).unwrap();
    let row = |label: &str| -> Vec<String> {
        let line = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("README has no row for {label}"));
        line.split('|').map(|c| c.trim().to_string()).collect()
    };
    for (label, family) in [
        ("zoo CNN", "cnn"),
        ("zoo ResNet18", "resnet18"),
        ("zoo ViT", "vit"),
        ("zoo MLP", "mlp"),
        ("zoo classical", "classical"),
    ] {
        let m = summary["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["family"] == family)
            .unwrap();
        let f = |k: &str| m[k].as_f64().unwrap();
        let cells = row(label);
        // The report times each file as shipped: an int8 file's latency is
        // its int8 figure, and the row says so.
        let int8 = m["latency_ms"].is_null();
        let latency = if int8 {
            f("int8_latency_ms")
        } else {
            f("latency_ms")
        };
        assert_eq!(
            cells[1].contains("int8"),
            int8,
            "README row {label}: int8 as in summary.json"
        );
        assert_eq!(
            cells[2..5],
            [
                format!("{:.2}%", f("public_test_acc") * 100.0),
                format!("{:.3}", f("weighted_f1")),
                format!("{latency:.2} ms"),
            ],
            "README row {label} against docs/report-zoo/summary.json"
        );
        // Training time is the study's record (a model file does not carry
        // it): the family's row in docs/zoo.md, `(N s)`.
        assert_eq!(
            cells[5],
            duration(zoo_seconds(&zoo, family)),
            "README row {label}: training time against docs/zoo.md"
        );
        assert_eq!(
            m["tta"].as_bool(),
            Some(cells[1].contains("TTA")),
            "README row {label}: TTA as in summary.json"
        );
    }
    // The release row's figures are the model card's, of the version it names.
    let card = std::fs::read_to_string(repo.join("models/MODEL_CARD.md")).unwrap();
    let cells = row("release v");
    let version = cells[1]
        .strip_prefix("release ")
        .and_then(|c| c.split(':').next())
        .unwrap();
    assert!(
        card.lines()
            .next()
            .is_some_and(|t| t.contains(&format!("({version})"))),
        "the model card is not of release {version}"
    );
    let trained = cells[5].split(" (").next().unwrap();
    for figure in [&cells[2], &cells[3], &trained.to_string()] {
        assert!(
            card.contains(figure.as_str()),
            "{figure} not in the model card"
        );
    }
}
