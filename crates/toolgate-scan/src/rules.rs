//! The word lists and readings behind [`crate::classify`].
//!
//! Everything here is a plain table so that a reviewer can read, in one
//! place, which word points to which category.

use crate::Category;

/// Leading verbs of a tool name (or of its description's first sentence)
/// and the category each means. Matched against whole lower-case words after
/// splitting `snake_case`, `kebab-case`, `camelCase` and dotted names.
pub(crate) const VERBS: &[(&str, Category)] = &[
    // Read: looks, never changes anything.
    ("get", Category::Read),
    ("list", Category::Read),
    ("read", Category::Read),
    ("search", Category::Read),
    ("fetch", Category::Read),
    ("query", Category::Read),
    ("find", Category::Read),
    ("lookup", Category::Read),
    ("look", Category::Read),
    ("describe", Category::Read),
    ("show", Category::Read),
    ("view", Category::Read),
    ("retrieve", Category::Read),
    ("inspect", Category::Read),
    ("check", Category::Read),
    ("count", Category::Read),
    ("download", Category::Read),
    ("export", Category::Read),
    ("browse", Category::Read),
    ("explore", Category::Read),
    ("analyze", Category::Read),
    ("analyse", Category::Read),
    ("summarize", Category::Read),
    ("compare", Category::Read),
    ("diff", Category::Read),
    ("status", Category::Read),
    ("log", Category::Read),
    ("screenshot", Category::Read),
    ("snapshot", Category::Read),
    ("navigate", Category::Read),
    ("open", Category::Read),
    ("scrape", Category::Read),
    ("crawl", Category::Read),
    ("extract", Category::Read),
    ("map", Category::Read),
    ("geocode", Category::Read),
    ("reverse", Category::Read),
    ("directions", Category::Read),
    ("distance", Category::Read),
    ("resolve", Category::Read),
    ("validate", Category::Read),
    ("verify", Category::Read),
    ("preview", Category::Read),
    ("watch", Category::Read),
    ("echo", Category::Other),
    ("print", Category::Read),
    ("take", Category::Read),
    ("wait", Category::Read),
    ("research", Category::Read),
    // Other: changes only the agent's own session.
    ("hover", Category::Other),
    ("resize", Category::Other),
    ("emulate", Category::Other),
    ("scroll", Category::Other),
    ("return", Category::Read),
    ("calculate", Category::Other),
    // Pure conversions compute an answer from their arguments alone.
    ("convert", Category::Other),
    ("think", Category::Other),
    ("sequentialthinking", Category::Other),
    ("tree", Category::Read),
    ("which", Category::Read),
    ("whoami", Category::Read),
    ("me", Category::Read),
    ("info", Category::Read),
    ("console", Category::Read),
    ("network", Category::Read),
    // Write: creates or changes state that can be changed back.
    ("create", Category::Write),
    ("add", Category::Write),
    ("send", Category::Write),
    ("post", Category::Write),
    ("put", Category::Write),
    ("patch", Category::Write),
    ("update", Category::Write),
    ("edit", Category::Write),
    ("modify", Category::Write),
    ("write", Category::Write),
    ("set", Category::Write),
    ("upload", Category::Write),
    ("move", Category::Write),
    ("rename", Category::Write),
    ("comment", Category::Write),
    ("reply", Category::Write),
    ("react", Category::Write),
    ("merge", Category::Write),
    ("push", Category::Write),
    ("fork", Category::Write),
    ("commit", Category::Write),
    ("save", Category::Write),
    ("store", Category::Write),
    ("insert", Category::Write),
    ("append", Category::Write),
    ("upsert", Category::Write),
    ("publish", Category::Write),
    ("share", Category::Write),
    ("invite", Category::Write),
    ("assign", Category::Write),
    ("label", Category::Write),
    ("tag", Category::Write),
    ("mark", Category::Write),
    ("star", Category::Write),
    ("close", Category::Write),
    ("reopen", Category::Write),
    ("copy", Category::Write),
    ("duplicate", Category::Write),
    ("import", Category::Write),
    ("restore", Category::Write),
    ("enable", Category::Write),
    ("disable", Category::Write),
    ("start", Category::Write),
    ("stop", Category::Write),
    ("pause", Category::Write),
    ("resume", Category::Write),
    ("restart", Category::Write),
    ("schedule", Category::Write),
    ("book", Category::Write),
    ("register", Category::Write),
    ("configure", Category::Write),
    ("install", Category::Write),
    ("generate", Category::Write),
    ("click", Category::Write),
    ("type", Category::Write),
    ("fill", Category::Write),
    ("select", Category::Write),
    ("press", Category::Write),
    ("drag", Category::Write),
    ("submit", Category::Write),
    ("mkdir", Category::Write),
    ("checkout", Category::Write),
    ("approve", Category::Write),
    ("review", Category::Write),
    ("request", Category::Write),
    ("notify", Category::Write),
    ("tweet", Category::Write),
    ("link", Category::Write),
    ("attach", Category::Write),
    ("replace", Category::Write),
    ("apply", Category::Write),
    ("sync", Category::Write),
    ("init", Category::Write),
    ("initialize", Category::Write),
    ("provision", Category::Write),
    ("scale", Category::Write),
    ("transition", Category::Write),
    ("cancel", Category::Write),
    ("unlink", Category::Write),
    ("detach", Category::Write),
    ("unassign", Category::Write),
    ("unstar", Category::Write),
    ("stage", Category::Write),
    ("handle", Category::Write),
    ("process", Category::Write),
    ("issue", Category::Write),
    ("capture", Category::Write),
    ("finalize", Category::Write),
    ("confirm", Category::Write),
    ("void", Category::Write),
    ("record", Category::Write),
    ("log_in", Category::Write),
    ("unstage", Category::Write),
    // Execute: runs code, commands or workflows whose effect is open-ended.
    ("run", Category::Execute),
    ("exec", Category::Execute),
    ("execute", Category::Execute),
    ("eval", Category::Execute),
    ("evaluate", Category::Execute),
    ("shell", Category::Execute),
    ("invoke", Category::Execute),
    ("deploy", Category::Execute),
    ("trigger", Category::Execute),
    ("call", Category::Execute),
    ("spawn", Category::Execute),
    ("launch", Category::Execute),
    ("bash", Category::Execute),
    ("terminal", Category::Execute),
    ("script", Category::Execute),
    ("dispatch", Category::Execute),
    ("rerun", Category::Execute),
    ("build", Category::Execute),
    ("compile", Category::Execute),
    ("test", Category::Execute),
    // Destructive: removes or irreversibly overwrites data, or revokes access.
    ("delete", Category::Destructive),
    ("remove", Category::Destructive),
    ("rm", Category::Destructive),
    ("drop", Category::Destructive),
    ("destroy", Category::Destructive),
    ("purge", Category::Destructive),
    ("truncate", Category::Destructive),
    ("wipe", Category::Destructive),
    ("erase", Category::Destructive),
    ("revoke", Category::Destructive),
    ("terminate", Category::Destructive),
    ("kill", Category::Destructive),
    ("clear", Category::Destructive),
    ("reset", Category::Destructive),
    ("ban", Category::Destructive),
    ("kick", Category::Destructive),
    ("archive", Category::Destructive),
    ("trash", Category::Destructive),
    ("uninstall", Category::Destructive),
    ("unpublish", Category::Destructive),
    ("deprovision", Category::Destructive),
    ("discard", Category::Destructive),
    ("force", Category::Destructive),
    // Financial: moves money or commits to pay.
    ("pay", Category::Financial),
    ("transfer", Category::Financial),
    ("charge", Category::Financial),
    ("refund", Category::Financial),
    ("invoice", Category::Financial),
    ("payout", Category::Financial),
    ("purchase", Category::Financial),
    ("buy", Category::Financial),
    ("sell", Category::Financial),
    ("withdraw", Category::Financial),
    ("deposit", Category::Financial),
    ("trade", Category::Financial),
    ("order", Category::Financial),
    ("bill", Category::Financial),
    ("subscribe", Category::Financial),
    ("tip", Category::Financial),
    ("donate", Category::Financial),
    ("swap", Category::Financial),
    ("stake", Category::Financial),
    ("bid", Category::Financial),
];

/// Nouns that make a Write verb Financial: creating, sending or changing one
/// of these moves money or commits to pay (`create_refund`,
/// `update_subscription`, `send_payment`). With a Read verb they stay Read
/// (`list_invoices`).
pub(crate) const MONEY_NOUNS: &[&str] = &[
    "payment",
    "payments",
    "refund",
    "refunds",
    "charge",
    "charges",
    "payout",
    "payouts",
    "transfer",
    "transfers",
    "invoice",
    "invoices",
    "subscription",
    "subscriptions",
    "purchase",
    "order",
    "orders",
    "transaction",
    "transactions",
    "money",
    "funds",
    "paymentlink",
    "payment_link",
    "checkout",
    "withdrawal",
    "trade",
    "swap",
    "bet",
    "tip",
    "donation",
    "credit",
    "credits",
    "dispute",
    "disputes",
];

/// Objects that belong to the agent's own session (its browser page, tab,
/// window): closing, selecting, stopping or resuming one is Other.
pub(crate) const SESSION_NOUNS: &[&str] = &[
    "page", "pages", "tab", "tabs", "browser", "window", "session", "interact", "viewport",
];
/// Verbs that, on a session object, change only the agent's session.
pub(crate) const SESSION_VERBS: &[&str] = &["close", "select", "stop", "resume", "switch", "focus"];
/// Objects that are observations: starting or stopping one is Read.
pub(crate) const OBSERVATION_NOUNS: &[&str] = &[
    "recording",
    "trace",
    "tracing",
    "video",
    "screencast",
    "profiling",
    "profile",
    "capture",
];

/// Words in a name that mean many things at once: a bulk delete is
/// critical, a bulk write high.
pub(crate) const BULK_WORDS: &[&str] = &[
    "all",
    "bulk",
    "batch",
    "mass",
    "every",
    "everything",
    "many",
    "multiple",
    "database",
    "table",
    "schema",
    "repository",
    "repo",
    "project",
    "bucket",
    "cluster",
    "namespace",
    "account",
    "workspace",
];

/// Words in a name that mean secrets (a Read of them is medium risk).
pub(crate) const SECRET_WORDS: &[&str] = &[
    "env",
    "secret",
    "secrets",
    "token",
    "tokens",
    "password",
    "passwords",
    "credential",
    "credentials",
    "key",
    "keys",
    "apikey",
    "cookie",
    "cookies",
    "environment",
];

/// Phrases in a description: (lower-case phrase, category it points to,
/// whether it means the action is irreversible).
pub(crate) const PHRASES: &[(&str, Category, bool)] = &[
    ("permanently", Category::Destructive, true),
    ("cannot be undone", Category::Destructive, true),
    ("can not be undone", Category::Destructive, true),
    ("can't be undone", Category::Destructive, true),
    ("irreversibl", Category::Destructive, true),
    ("not reversible", Category::Destructive, true),
    ("cannot be recovered", Category::Destructive, true),
    ("cannot be reversed", Category::Destructive, true),
    ("deletes ", Category::Destructive, false),
    ("delete a ", Category::Destructive, false),
    ("delete an ", Category::Destructive, false),
    ("delete the ", Category::Destructive, false),
    ("removes ", Category::Destructive, false),
    ("destroys ", Category::Destructive, false),
    ("wipes ", Category::Destructive, false),
    ("force push", Category::Destructive, false),
    ("force-push", Category::Destructive, false),
    ("executes arbitrary", Category::Execute, false),
    ("execute arbitrary", Category::Execute, false),
    ("run arbitrary", Category::Execute, false),
    ("runs arbitrary", Category::Execute, false),
    ("arbitrary code", Category::Execute, false),
    ("arbitrary command", Category::Execute, false),
    ("shell command", Category::Execute, false),
    ("terminal command", Category::Execute, false),
    ("executes a command", Category::Execute, false),
    ("execute a command", Category::Execute, false),
    ("execute javascript", Category::Execute, false),
    ("executes javascript", Category::Execute, false),
    ("execute a javascript", Category::Execute, false),
    ("charges the card", Category::Financial, false),
    ("charge the card", Category::Financial, false),
    ("charges a card", Category::Financial, false),
    ("charge a card", Category::Financial, false),
    ("transfer funds", Category::Financial, false),
    ("transfers funds", Category::Financial, false),
    ("send money", Category::Financial, false),
    ("sends money", Category::Financial, false),
    ("moves money", Category::Financial, false),
    ("move money", Category::Financial, false),
    ("make a payment", Category::Financial, false),
    ("makes a payment", Category::Financial, false),
    ("process a payment", Category::Financial, false),
    ("processes a payment", Category::Financial, false),
    ("issue a refund", Category::Financial, false),
    ("issues a refund", Category::Financial, false),
    ("place an order", Category::Financial, false),
    ("places an order", Category::Financial, false),
    ("sends an email", Category::Write, false),
    ("send an email", Category::Write, false),
    ("sends a message", Category::Write, false),
    ("posts a message", Category::Write, false),
];

/// Input-schema fields that name a program to run.
pub(crate) const CODE_FIELDS: &[&str] = &[
    "command",
    "cmd",
    "script",
    "code",
    "shell",
    "javascript",
    "js",
    "bash",
    "commands",
    "python",
    "source_code",
];
/// Input-schema fields that carry an amount of money.
pub(crate) const AMOUNT_FIELDS: &[&str] = &[
    "amount",
    "price",
    "unit_amount",
    "amount_cents",
    "total",
    "value_cents",
    "cost",
    "quantity_usd",
    "amount_usd",
];
/// Input-schema fields naming a currency (a money signal on their own).
pub(crate) const CURRENCY_FIELDS: &[&str] = &["currency", "currency_code"];
/// Input-schema fields that reach the open world.
pub(crate) const URL_FIELDS: &[&str] =
    &["url", "uri", "urls", "endpoint", "href", "link", "website"];
/// Input-schema fields naming files.
pub(crate) const PATH_FIELDS: &[&str] = &[
    "path",
    "paths",
    "file",
    "filepath",
    "file_path",
    "filename",
    "source",
    "destination",
    "directory",
    "dir",
];
/// Input-schema fields naming a recipient.
pub(crate) const RECIPIENT_FIELDS: &[&str] = &[
    "recipient",
    "recipients",
    "to",
    "email",
    "phone",
    "phone_number",
    "channel",
    "channel_id",
    "chat_id",
    "cc",
    "bcc",
    "contact",
    "number",
];

/// Looks a word up in [`VERBS`].
pub(crate) fn verb(word: &str) -> Option<Category> {
    VERBS.iter().find(|(w, _)| *w == word).map(|(_, c)| *c)
}

/// A description word reduced to the verb it inflects: `deletes` ->
/// `delete`, `creating` -> `create`, `searched` -> `search`.
pub(crate) fn description_verb(word: &str) -> Option<(String, Category)> {
    let w = word.to_ascii_lowercase();
    let mut candidates = vec![w.clone()];
    for suffix in ["es", "s", "ed", "d", "ing"] {
        if let Some(stem) = w.strip_suffix(suffix) {
            if stem.len() >= 2 {
                candidates.push(stem.to_string());
                if suffix == "ing" {
                    candidates.push(format!("{stem}e"));
                }
            }
        }
    }
    candidates
        .into_iter()
        .find_map(|c| verb(&c).map(|cat| (c, cat)))
}

/// Splits a tool name into lower-case words: snake_case, kebab-case,
/// camelCase, dotted, slashed, `__`-namespaced and digits.
pub(crate) fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_uppercase() && !cur.is_empty() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
