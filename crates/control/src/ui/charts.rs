//! Charts as inline SVG, drawn on the server: no script, no font or file from elsewhere. Each
//! has a text alternative (`role="img"`, `aria-label`, and a `<title>` per point) so that it
//! reads without eyes too.

use maud::{html, Markup};

/// A line of `values` (oldest first) in a `width`×`height` box, with `label` as its text
/// alternative.
pub fn sparkline(values: &[f64], width: u32, height: u32, label: &str) -> Markup {
    lines(&[(values, BLUE)], width, height, label)
}

/// The line colour of the main series.
pub const BLUE: &str = "#0b5cad";
/// The line colour of failures drawn over it.
pub const RED: &str = "#a40e26";

/// Lines of `(values, colour)` (oldest first) on one scale in a `width`×`height` box — e.g.
/// requests and, over them, the errors among them — with `label` as their text alternative.
pub fn lines(series: &[(&[f64], &str)], width: u32, height: u32, label: &str) -> Markup {
    let max = series
        .iter()
        .flat_map(|(values, _)| values.iter().copied())
        .fold(0.0_f64, f64::max);
    let polyline = |values: &[f64]| {
        let n = values.len().max(2) - 1;
        let h = f64::from(height) - 2.0;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let x = f64::from(width) * i as f64 / n as f64;
                let y = if max > 0.0 {
                    1.0 + h - h * v / max
                } else {
                    1.0 + h
                };
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg.chart role="img" aria-label=(label) width=(width) height=(height)
            viewBox={ "0 0 " (width) " " (height) } xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            @for (values, colour) in series {
                polyline points=(polyline(values)) fill="none" stroke=(colour) stroke-width="1.5" {}
            }
        }
    }
}

/// Bars of `values` with their `titles` (e.g. one per day), in a `width`×`height` box.
pub fn bars(values: &[u64], titles: &[String], width: u32, height: u32, label: &str) -> Markup {
    // A day with none has no bar (a count of zero is the baseline).
    let values: Vec<Option<f64>> = values
        .iter()
        .map(|v| (*v > 0).then_some(*v as f64))
        .collect();
    columns(&values, titles, width, height, label)
}

/// Bars of `values` where a day may have no value (`None`: no bar, unlike a zero's empty
/// one), with their `titles`, in a `width`×`height` box.
pub fn columns(
    values: &[Option<f64>],
    titles: &[String],
    width: u32,
    height: u32,
    label: &str,
) -> Markup {
    let max = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let slot = f64::from(width) / values.len().max(1) as f64;
    let h = f64::from(height) - 1.0;
    html! {
        svg.chart role="img" aria-label=(label) width=(width) height=(height)
            viewBox={ "0 0 " (width) " " (height) } xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            line x1="0" y1=(height) x2=(width) y2=(height) stroke="#6e7781" stroke-width="1" {}
            @for (i, v) in values.iter().enumerate() {
                @if let Some(v) = v {
                    // A measured zero shows as a sliver, unlike a day with nothing measured.
                    @let bh = (h * v / max).max(2.0);
                    rect.bar x={ (format!("{:.1}", slot * i as f64 + 1.0)) } y={ (format!("{:.1}", h - bh)) }
                        width={ (format!("{:.1}", (slot - 2.0).max(1.0))) } height={ (format!("{:.1}", bh)) } fill="#0b5cad" {
                        title { (titles.get(i).map(String::as_str).unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// How much of an error budget is left (`remaining` as a share; below 0: overspent).
pub fn budget(remaining: f64, label: &str) -> Markup {
    let share = remaining.clamp(0.0, 1.0);
    let colour = if remaining <= 0.0 {
        RED
    } else if remaining < 0.25 {
        "#9a6700"
    } else {
        "#116329"
    };
    html! {
        svg.chart role="img" aria-label=(label) width="200" height="14" viewBox="0 0 200 14" xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            rect x="0" y="0" width="200" height="14" fill="#eaeef2" {}
            rect x="0" y="0" width={ (format!("{:.1}", 200.0 * share)) } height="14" fill=(colour) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_scale_to_their_box_and_say_what_they_show() {
        let s = sparkline(&[0.0, 5.0, 10.0], 100, 20, "12 requests").into_string();
        assert!(s.contains(r#"aria-label="12 requests""#), "{s}");
        assert!(s.contains("0.0,19.0 50.0,10.0 100.0,1.0"), "{s}");
        let both = lines(&[(&[0.0, 10.0], BLUE), (&[0.0, 5.0], RED)], 10, 20, "x").into_string();
        assert!(
            both.contains("0.0,19.0 10.0,1.0") && both.contains("0.0,19.0 10.0,10.0"),
            "one scale for both lines: {both}"
        );
        let b = bars(
            &[1, 0, 2],
            &["a".into(), "b".into(), "c".into()],
            30,
            10,
            "3 deploys",
        )
        .into_string();
        assert_eq!(
            b.matches("<rect").count(),
            2,
            "a day without deploys has no bar: {b}"
        );
        assert!(b.contains("<title>c</title>"), "{b}");
        let gaps = columns(
            &[None, Some(3.0), None],
            &["a".into(), "b".into(), "c".into()],
            30,
            10,
            "one day with a value",
        )
        .into_string();
        assert_eq!(gaps.matches("<rect").count(), 1, "{gaps}");
        assert!(gaps.contains("<title>b</title>") && !gaps.contains("<title>a</title>"));
        let over = budget(-0.5, "overspent").into_string();
        assert!(
            over.contains(r##"width="0.0""##) && over.contains("#a40e26"),
            "{over}"
        );
    }
}
