//! A small document model, written out twice: as one self-contained HTML
//! page (figures embedded as data URIs, no script, no network) and as
//! Markdown beside its figures.

use base64::Engine as _;

pub enum Block {
    Heading(u8, String),
    Para(String),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    Figure {
        /// File name under `plots/`.
        file: String,
        caption: String,
        png: Vec<u8>,
    },
    /// A folded block of preformatted text (HTML) or a fenced block (Markdown).
    Code {
        summary: String,
        text: String,
    },
}

/// A table cell; `flag` marks a value to look at (a shortcut).
pub struct Cell {
    pub text: String,
    pub flag: bool,
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, flag: false }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_string())
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}

const STYLE: &str =
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:left;font-variant-numeric:tabular-nums}\
th{background:#eee}td.flag{background:#fdd;font-weight:bold}\
figure{display:inline-block;margin:0.5em 1em 1em 0}figcaption{font-size:0.9em;color:#555}\
code,pre{font-size:0.85em}pre{background:#f6f6f6;padding:0.5em;overflow-x:auto}";

pub fn html(title: &str, blocks: &[Block]) -> String {
    let mut o = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = esc(title)
    );
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                o.push_str(&format!("<h{level}>{}</h{level}>\n", esc(text)));
            }
            Block::Para(text) => o.push_str(&format!("<p>{}</p>\n", esc(text))),
            Block::Table { head, rows } => {
                o.push_str("<table>\n<tr>");
                for h in head {
                    o.push_str(&format!("<th>{}</th>", esc(h)));
                }
                o.push_str("</tr>\n");
                for r in rows {
                    o.push_str("<tr>");
                    for c in r {
                        let class = if c.flag { " class=\"flag\"" } else { "" };
                        o.push_str(&format!("<td{class}>{}</td>", esc(&c.text)));
                    }
                    o.push_str("</tr>\n");
                }
                o.push_str("</table>\n");
            }
            Block::Figure { file, caption, png } => {
                let data = base64::engine::general_purpose::STANDARD.encode(png);
                o.push_str(&format!(
                    "<figure><img src=\"data:image/png;base64,{data}\" alt=\"{}\" data-file=\"{}\">\
                     <figcaption>{}</figcaption></figure>\n",
                    esc(caption),
                    esc(file),
                    esc(caption)
                ));
            }
            Block::Code { summary, text } => o.push_str(&format!(
                "<details><summary>{}</summary><pre>{}</pre></details>\n",
                esc(summary),
                esc(text)
            )),
        }
    }
    o.push_str("</body>\n</html>\n");
    o
}

fn md_cell(c: &Cell) -> String {
    let t = c.text.replace('|', "\\|");
    if c.flag {
        format!("**{t}** ⚠")
    } else {
        t
    }
}

pub fn markdown(title: &str, blocks: &[Block]) -> String {
    let mut o = format!("# {title}\n\n");
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                o.push_str(&format!("{} {text}\n\n", "#".repeat(*level as usize)));
            }
            Block::Para(text) => o.push_str(&format!("{text}\n\n")),
            Block::Table { head, rows } => {
                o.push_str(&format!("| {} |\n", head.join(" | ")));
                o.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                for r in rows {
                    let cells: Vec<String> = r.iter().map(md_cell).collect();
                    o.push_str(&format!("| {} |\n", cells.join(" | ")));
                }
                o.push('\n');
            }
            Block::Figure { file, caption, .. } => {
                o.push_str(&format!("![{caption}](plots/{file})\n\n"));
            }
            Block::Code { summary, text } => {
                o.push_str(&format!("<details><summary>{summary}</summary>\n\n```json\n{text}\n```\n\n</details>\n\n"));
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_in_html_and_pipes_in_markdown() {
        let blocks = vec![
            Block::Para("a <b> & \"c\"".into()),
            Block::Table {
                head: vec!["x".into()],
                rows: vec![vec![Cell {
                    text: "1|2".into(),
                    flag: true,
                }]],
            },
        ];
        let h = html("t<", &blocks);
        assert!(h.contains("<p>a &lt;b&gt; &amp; &quot;c&quot;</p>"), "{h}");
        assert!(h.contains("<title>t&lt;</title>"));
        assert!(h.contains("<td class=\"flag\">1|2</td>"));
        let m = markdown("t", &blocks);
        assert!(m.contains("| **1\\|2** ⚠ |"), "{m}");
    }
}
