//! The HTML pages users see: sign in, consent, and errors. Every value shown is escaped; the
//! pages carry no scripts (see [`super::reply::html`] for their headers).

/// `s` escaped for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} - Moat</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         h1{{font-size:1.4rem}} .box{{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}}\
         label{{display:block;margin:.6rem 0 .2rem}} input[type=text],input[type=password]{{width:100%;padding:.4rem}}\
         button{{padding:.5rem 1.2rem;margin:.8rem .5rem 0 0}} .err{{color:#a00}} code{{word-break:break-all}}\
         </style></head><body>\n{body}\n</body></html>\n",
        title = esc(title),
    )
}

/// The sign-in form of local users, for the authorization request `request`.
pub fn login(request: &str, client_name: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"err\">{}</p>", esc(e))
    });
    page(
        "Sign in",
        &format!(
            "<h1>Sign in to Moat</h1>\n<p><b>{client}</b> asks to use MCP servers on your behalf.</p>\n{error}\
             <form method=\"post\" action=\"login\">\
             <input type=\"hidden\" name=\"request\" value=\"{request}\">\
             <label for=\"username\">User name</label><input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
             <label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>",
            client = esc(client_name),
            request = esc(request),
        ),
    )
}

/// What the consent page shows about one request.
pub struct ConsentView<'a> {
    pub request: &'a str,
    pub csrf: &'a str,
    pub user: &'a str,
    pub client_name: &'a str,
    pub client_id: &'a str,
    /// Where the client came from: its metadata document's host, or its redirect host.
    pub client_origin: &'a str,
    pub redirect_host: &'a str,
    pub scopes: &'a [String],
    /// (server name, its URL)
    pub servers: &'a [(String, String)],
}

pub fn consent(v: &ConsentView<'_>) -> String {
    let scopes = if v.scopes.is_empty() {
        "<li>(no scopes)</li>".to_string()
    } else {
        v.scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", esc(s)))
            .collect()
    };
    let servers: String = v
        .servers
        .iter()
        .map(|(n, u)| format!("<li><b>{}</b> <code>{}</code></li>", esc(n), esc(u)))
        .collect();
    page(
        "Allow access",
        &format!(
            "<h1>Allow <b>{name}</b> to use MCP servers as {user}?</h1>\n\
             <div class=\"box\"><p>Client: <b>{name}</b><br>Client ID: <code>{id}</code><br>\
             {origin}<br>After you answer, you are sent to <b>{redirect}</b>.</p>\
             <p>Servers:</p><ul>{servers}</ul><p>Scopes:</p><ul>{scopes}</ul></div>\
             <p>Only allow clients you started yourself. Moat remembers your answer for this client.</p>\
             <form method=\"post\" action=\"consent\">\
             <input type=\"hidden\" name=\"request\" value=\"{request}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            name = esc(v.client_name),
            user = esc(v.user),
            id = esc(v.client_id),
            origin = esc(v.client_origin),
            redirect = esc(v.redirect_host),
            request = esc(v.request),
            csrf = esc(v.csrf),
        ),
    )
}

pub fn connected(server: &str, provider: &str) -> String {
    page(
        "Connected",
        &format!(
            "<h1>Connected</h1><p>Moat keeps your access to <code>{}</code> for the server \
             <code>{}</code>; your MCP client never sees it.</p><p>You can go back to the \
             application.</p>",
            esc(provider),
            esc(server)
        ),
    )
}

pub fn error(code: &str, description: &str) -> String {
    page(
        "Error",
        &format!(
            "<h1>This request cannot go on</h1><p class=\"err\"><code>{}</code>: {}</p>\
             <p>Go back to the application and start again.</p>",
            esc(code),
            esc(description)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_shown_is_escaped() {
        let hostile = "<script>alert(1)</script>\"'&";
        let p = login(hostile, hostile, Some(hostile));
        assert!(!p.contains("<script>"), "{p}");
        assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        let scopes = vec![hostile.to_string()];
        let servers = vec![(hostile.to_string(), hostile.to_string())];
        let c = consent(&ConsentView {
            request: hostile,
            csrf: hostile,
            user: hostile,
            client_name: hostile,
            client_id: hostile,
            client_origin: hostile,
            redirect_host: hostile,
            scopes: &scopes,
            servers: &servers,
        });
        assert!(!c.contains("<script>"), "{c}");
        assert!(!error(hostile, hostile).contains("<script>"));
    }
}
