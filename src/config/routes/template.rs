//! `path = "/{order_id}/refund"`: a route's path templates, the part of the path after its
//! prefix, with named parameters that a policy reads (src/proxy/template.rs matches them).

/// One template: `/`-separated segments after the route's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// As configured, for messages.
    pub text: String,
    pub segments: Vec<TemplateSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    /// Matched as the route's prefix is (`match_case`).
    Literal(String),
    /// `{name}`: one whole segment.
    Parameter(String),
}

impl PathTemplate {
    pub fn parameters(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            TemplateSegment::Parameter(name) => Some(name.as_str()),
            TemplateSegment::Literal(_) => None,
        })
    }
}

/// A parameter name: a letter or `_`, then letters, digits and `_` (a Cedar attribute name
/// that needs no quoting).
fn is_parameter_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses one template; the problem (without the key) when it is not one.
pub(super) fn parse_template(text: &str) -> Result<PathTemplate, String> {
    let Some(body) = text.strip_prefix('/') else {
        return Err(format!(
            "`{text}` must start with `/` (it follows the prefix)"
        ));
    };
    let mut segments = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for segment in body.split('/') {
        if let Some(name) = segment
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        {
            if !is_parameter_name(name) {
                return Err(format!(
                    "`{text}`: `{{{name}}}` is not a parameter name (letters, digits, `_`)"
                ));
            }
            if names.contains(&name) {
                return Err(format!("`{text}`: parameter `{name}` appears twice"));
            }
            names.push(name);
            segments.push(TemplateSegment::Parameter(name.to_owned()));
        } else if !segment.is_empty()
            && segment != "."
            && !segment.ends_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            segments.push(TemplateSegment::Literal(segment.to_owned()));
        } else {
            return Err(format!(
                "`{text}`: `{segment}` is neither a plain segment nor a `{{parameter}}`"
            ));
        }
    }
    Ok(PathTemplate {
        text: text.to_owned(),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_have_plain_segments_and_named_parameters() {
        let template = parse_template("/{order_id}/refund").expect("valid");
        assert_eq!(
            template.segments,
            vec![
                TemplateSegment::Parameter("order_id".into()),
                TemplateSegment::Literal("refund".into())
            ]
        );
        assert_eq!(template.parameters().collect::<Vec<_>>(), ["order_id"]);
        for bad in [
            "{id}",
            "/",
            "/{id}/",
            "//x",
            "/{1d}",
            "/{a-b}",
            "/{id}/{id}",
            "/x{id}",
            "/a;b",
            "/a%41",
            "/..",
            "/a.",
        ] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
    }
}
