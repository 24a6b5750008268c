//! A route's path templates matched against the rest of the normalised path (what follows
//! the prefix, exactly as the upstream receives it).
//!
//! A parameter is one whole segment of plain characters: ASCII letters and digits and
//! `-._~!$&'()*+,=:@`. A segment holding a percent escape or a `;` fits no parameter, so the
//! value a policy reads is byte for byte the segment the upstream receives, and no second
//! spelling of it exists: the edge has already decoded escaped letters and digits
//! (`%37` is `7`) and refused dot segments and trailing dots; `%40` beside `@`, or `7;v=1`
//! beside `7`, would be a second spelling, so they are refused. On a `match_case = false`
//! route (an upstream that ignores case) the value is lower-cased, and literal segments are
//! compared ignoring case, as the prefix is.

use crate::config::{PathTemplate, TemplateSegment};

/// The parameters of the template that fitted, by name, in template order.
pub type PathParameters<'t> = Vec<(&'t str, String)>;

fn is_parameter_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&byte)
}

/// The first template that `rest` (`""` or `/…`) fits, with its parameters; `None` when it
/// fits none.
pub fn match_templates<'t>(
    templates: &'t [PathTemplate],
    rest: &str,
    match_case: bool,
) -> Option<PathParameters<'t>> {
    let body = rest.strip_prefix('/')?;
    let segments: Vec<&str> = body.split('/').collect();
    templates
        .iter()
        .find_map(|template| match_one(template, &segments, match_case))
}

fn match_one<'t>(
    template: &'t PathTemplate,
    segments: &[&str],
    match_case: bool,
) -> Option<PathParameters<'t>> {
    if template.segments.len() != segments.len() {
        return None;
    }
    let mut parameters = Vec::new();
    for (wanted, segment) in template.segments.iter().zip(segments) {
        match wanted {
            TemplateSegment::Literal(literal) => {
                let same = if match_case {
                    segment == literal
                } else {
                    segment.eq_ignore_ascii_case(literal)
                };
                if !same {
                    return None;
                }
            }
            TemplateSegment::Parameter(name) => {
                if segment.is_empty() || !segment.bytes().all(is_parameter_byte) {
                    return None;
                }
                let value = if match_case {
                    (*segment).to_owned()
                } else {
                    segment.to_ascii_lowercase()
                };
                parameters.push((name.as_str(), value));
            }
        }
    }
    Some(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> PathTemplate {
        let segments = text[1..]
            .split('/')
            .map(
                |s| match s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                    Some(name) => TemplateSegment::Parameter(name.into()),
                    None => TemplateSegment::Literal(s.into()),
                },
            )
            .collect();
        PathTemplate {
            text: text.into(),
            segments,
        }
    }

    #[test]
    fn only_paths_that_fit_a_template_match_and_parameters_are_the_segments_as_sent() {
        let templates = [template("/{order_id}"), template("/{order_id}/refund")];
        let found = |rest| match_templates(&templates, rest, true);
        assert_eq!(found("/7"), Some(vec![("order_id", "7".to_owned())]));
        assert_eq!(
            found("/a@b.c/refund"),
            Some(vec![("order_id", "a@b.c".to_owned())])
        );
        for rest in [
            "",
            "/",
            "/7/",
            "/7/REFUND",
            "/7/refund/x",
            "/7;v=1",
            "/a%40b",
            "/caf%C3%A9",
            "/7/refund;x",
            "/7/refun%64",
        ] {
            assert_eq!(found(rest), None, "{rest}");
        }
        // An upstream that ignores case reads `ALICE` as `alice`, and so does the policy.
        let templates = [template("/{sub}/orders")];
        assert_eq!(
            match_templates(&templates, "/ALICE/ORDERS", false),
            Some(vec![("sub", "alice".to_owned())])
        );
    }
}
