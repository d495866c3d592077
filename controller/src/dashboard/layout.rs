//! What every page shares: the document around it, the header with the site's sections (the
//! administrators' only for them), and the login and refusal pages.

use maud::{html, Markup, DOCTYPE};

use crate::users::Caller;

/// A section of the site, as the header links to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Hosts,
    Instances,
    Volumes,
    Images,
    Events,
    /// The users' pages (every logged-in user).
    Marketplace,
    Storage,
}

impl Section {
    /// Every section, in the header's order, with its path, title and whether only
    /// administrators see it.
    const ALL: [(Section, &'static str, &'static str, bool); 8] = [
        (Section::Overview, "/", "Overview", true),
        (Section::Hosts, "/hosts", "Hosts", true),
        (Section::Instances, "/instances", "Instances", true),
        (Section::Volumes, "/volumes", "Volumes", true),
        (Section::Images, "/images", "Images", true),
        (Section::Events, "/events", "Events", true),
        (Section::Marketplace, "/marketplace", "Marketplace", false),
        (Section::Storage, "/storage", "Storage", false),
    ];

    /// The first section `caller` may see: where a login leads.
    pub fn home(caller: &Caller) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, _, _, admin)| caller.admin || !admin)
            .map_or("/", |(_, path, _, _)| path)
    }
}

/// A whole document: `scripts` are this site's (`/ui/...`), after the body.
fn document(title: &str, scripts: &[&str], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · StratusLab" }
                link rel="stylesheet" href="/ui/style.css";
                @if scripts.contains(&"uplot.js") {
                    link rel="stylesheet" href="/ui/uplot.css";
                }
            }
            body {
                (body)
                @for script in scripts {
                    script src={ "/ui/" (script) } {}
                }
            }
        }
    }
}

/// A page of the site for `caller`: the header (sections, the event stream's state, logout)
/// and `body` in a `main` that carries the event stream's position when the page was made
/// (`since`), from which `live.js` follows (a page without it does not follow).
pub fn page(
    caller: &Caller,
    current: Section,
    title: &str,
    since: Option<u64>,
    scripts: &[&str],
    body: Markup,
) -> Markup {
    let mut all = vec!["live.js"];
    all.extend_from_slice(scripts);
    document(
        title,
        &all,
        html! {
            header {
                h1 { a href=(Section::home(caller)) { "StratusLab" } }
                nav {
                    @for (section, path, name, admin) in Section::ALL {
                        @if caller.admin || !admin {
                            a href=(path) aria-current=[(section == current).then_some("page")] { (name) }
                        }
                    }
                }
                span #connection data-state="connecting" { "connecting…" }
                form method="post" action="/logout" {
                    button type="submit" { "Log out " (caller.name) }
                }
            }
            main #page data-since=[since] data-page=(title)
                data-event-types=(stratus_common::events::TYPES.join(" ")) { (body) }
        },
    )
}

pub fn login(error: Option<&str>) -> Markup {
    document(
        "Log in",
        &[],
        html! {
            main.login {
                h1 { "StratusLab" }
                p { "Log in with your cloud account." }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                form method="post" action="/login" {
                    label { "User name " input name="username" autocomplete="username" required; }
                    label { "Password " input name="password" type="password" autocomplete="current-password" required; }
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// The answer to a page `user` may not see.
pub fn refused(user: &str) -> Markup {
    document(
        "Refused",
        &[],
        html! {
            main.login {
                h1 { "StratusLab" }
                p.error role="alert" {
                    "This page is for administrators; " (user) " is not one."
                }
                form method="post" action="/logout" { button type="submit" { "Log out" } }
            }
        },
    )
}

/// A page that is not there (an instance or host that does not exist).
pub fn not_found(caller: &Caller, current: Section, what: &str) -> Markup {
    page(
        caller,
        current,
        "Not found",
        None,
        &[],
        html! { p.error role="alert" { (what) } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_escaped() {
        let login = login(Some("a \"quoted\" <b>message</b>")).into_string();
        assert!(!login.contains("<b>"), "{login}");
        assert!(login.contains("&lt;b&gt;"), "{login}");
    }
}
