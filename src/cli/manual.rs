//! The manual: the sections `portcullis --help` ends with (files, signals,
//! environment, exit status), and the man pages the package installs,
//! rendered from the same command definitions and the same text.

use std::io;
use std::path::Path;

use clap::CommandFactory as _;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use super::Cli;

/// A section: its heading, then (term, description) entries.
type Section = (&'static str, &'static [(&'static str, &'static str)]);

const SECTIONS: &[Section] = &[
    (
        "FILES",
        &[
            (
                "/etc/portcullis/portcullis.toml",
                "The configuration the package's service runs with.",
            ),
            (
                "/var/lib/portcullis",
                "The database (storage.path). On the first start it also holds \
                 initial-admin-password, the console's first password, deleted once changed.",
            ),
            (
                "/usr/share/doc/portcullis/portcullis.example.toml",
                "Every configuration key, its default and its meaning.",
            ),
        ],
    ),
    (
        "SIGNALS",
        &[
            (
                "SIGHUP",
                "Reload the configuration (an invalid one is refused and the running one \
                 kept) and reopen a log file.",
            ),
            (
                "SIGTERM, SIGINT",
                "Stop accepting connections, let requests in flight finish for at most \
                 server.shutdown_grace, then exit.",
            ),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            (
                "PORTCULLIS_<SECTION>__<KEY>",
                "Overrides a configuration key, e.g. PORTCULLIS_ADMIN__TOKEN or \
                 PORTCULLIS_LOG__LEVEL.",
            ),
            (
                "PORTCULLIS_PROFILE",
                "dev, staging or prod (default: prod with --config, dev without).",
            ),
            (
                "PORTCULLIS_STORAGE__REDIS__PASSWORD",
                "The password of the shared Redis (storage.backend = \"redis\"), kept out of \
                 the configuration file.",
            ),
        ],
    ),
    (
        "EXIT STATUS",
        &[
            ("0", "A clean stop, or a valid configuration."),
            (
                "1",
                "The gateway cannot start, or a command failed (the reason is printed).",
            ),
            (
                "2",
                "The configuration is invalid (every problem is printed with its key path).",
            ),
        ],
    ),
    (
        "SEE ALSO",
        &[(
            "/usr/share/doc/portcullis/README.md",
            "The full documentation. The console is at http://127.0.0.1:9901/admin/ \
             (admin.listen).",
        )],
    ),
];

/// The sections, as plain text after `--help`.
pub fn help_sections() -> String {
    let mut text = String::new();
    for (heading, entries) in SECTIONS {
        text.push_str(&format!("{}:\n", title_case(heading)));
        for (term, description) in *entries {
            text.push_str(&format!("  {term}\n      {description}\n"));
        }
        text.push('\n');
    }
    text.trim_end().to_owned()
}

fn title_case(heading: &str) -> String {
    let lower = heading.to_lowercase();
    let mut chars = lower.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Writes `portcullis.1` and one page per subcommand into `dir`.
pub fn write(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command()
        .after_long_help(None::<&str>)
        .disable_help_subcommand(true);
    // Names each subcommand's page: portcullis-user-add.
    command.build();
    for sub in visible_subcommands(&command) {
        write_subcommand_pages(sub, dir)?;
    }
    // The main page, with the sections as man sections.
    let man = page_of(command);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    let mut roff = Roff::new();
    for (heading, entries) in SECTIONS {
        roff.control("SH", [*heading]);
        for (term, description) in *entries {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*description)]);
        }
    }
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    std::fs::write(dir.join("portcullis.1"), page)
}

fn visible_subcommands(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command.get_subcommands().filter(|sub| !sub.is_hide_set())
}

fn write_subcommand_pages(command: &clap::Command, dir: &Path) -> io::Result<()> {
    for sub in visible_subcommands(command) {
        write_subcommand_pages(sub, dir)?;
    }
    page_of(command.clone()).generate_to(dir).map(|_| ())
}

/// Every page names the manual and the date of the commit it documents.
fn page_of(command: clap::Command) -> Man {
    Man::new(command)
        .source(concat!("Portcullis ", env!("CARGO_PKG_VERSION")))
        .date(env!("PORTCULLIS_COMMIT_DATE"))
        .manual("Portcullis manual")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_is_written_with_the_sections() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path()).unwrap();
        let main = std::fs::read_to_string(dir.path().join("portcullis.1")).unwrap();
        for heading in [
            "NAME",
            "SYNOPSIS",
            "SUBCOMMANDS",
            "FILES",
            "SIGNALS",
            "EXIT STATUS",
        ] {
            let found = main
                .lines()
                .any(|l| l.starts_with(".SH") && l.contains(heading));
            assert!(found, "{heading}");
        }
        assert!(!main.contains("EXTRA"));
        for page in [
            "portcullis-serve.1",
            "portcullis-check.1",
            "portcullis-user-add.1",
        ] {
            assert!(dir.path().join(page).exists(), "{page}");
        }
        // The hidden command writing them is not documented.
        assert!(!dir.path().join("portcullis-manual.1").exists());
    }

    #[test]
    fn help_ends_with_the_same_sections() {
        let help = help_sections();
        assert!(help.starts_with("Files:\n  /etc/portcullis/portcullis.toml\n"));
        assert!(help.contains("Exit status:\n  0\n"));
    }
}
