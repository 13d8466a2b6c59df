//! A figure is plain data (series of points, bars, shaded polygons) that is drawn with egui_plot
//! and exported from the same data: SVG written by hand, CSV, and PNG cropped from a screenshot.

use egui::Color32;
use egui_plot::{Bar, BarChart, Legend, Line, LineStyle, Plot, PlotPoints, Polygon, Text, VLine};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub enum Kind {
    Line {
        width: f32,
        dashed: bool,
    },
    /// Bars centred on x with this width, from 0 to y.
    Bars {
        width: f64,
    },
    /// A filled polygon (points in order).
    Area,
    /// A vertical line at x = points[0].0.
    VLine {
        dashed: bool,
    },
    /// Text labels at the points (the strings in `labels`).
    Labels,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: Color32,
    pub kind: Kind,
    pub points: Vec<[f64; 2]>,
    pub labels: Vec<String>,
    /// Shown in the legend.
    pub legend: bool,
}

impl Series {
    pub fn line(name: &str, color: Color32, points: Vec<[f64; 2]>) -> Self {
        Self { name: name.into(), color, kind: Kind::Line { width: 2.0, dashed: false }, points, labels: vec![], legend: true }
    }
    pub fn dashed(mut self) -> Self {
        match &mut self.kind {
            Kind::Line { dashed, .. } | Kind::VLine { dashed } => *dashed = true,
            _ => {}
        }
        self
    }
    pub fn width(mut self, w: f32) -> Self {
        if let Kind::Line { width, .. } = &mut self.kind {
            *width = w;
        }
        self
    }
    pub fn bars(name: &str, color: Color32, width: f64, points: Vec<[f64; 2]>) -> Self {
        Self { name: name.into(), color, kind: Kind::Bars { width }, points, labels: vec![], legend: true }
    }
    pub fn area(name: &str, color: Color32, points: Vec<[f64; 2]>) -> Self {
        Self { name: name.into(), color, kind: Kind::Area, points, labels: vec![], legend: false }
    }
    pub fn vline(name: &str, color: Color32, x: f64) -> Self {
        Self { name: name.into(), color, kind: Kind::VLine { dashed: false }, points: vec![[x, 0.0]], labels: vec![], legend: true }
    }
    pub fn labels(color: Color32, points: Vec<[f64; 2]>, labels: Vec<String>) -> Self {
        Self { name: String::new(), color, kind: Kind::Labels, points, labels, legend: false }
    }
    pub fn hidden_from_legend(mut self) -> Self {
        self.legend = false;
        self
    }
}

#[derive(Clone, Debug)]
pub struct Figure {
    /// Unique id (also the export file stem).
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// The x axis shows 10^x (data are log10 values).
    pub log_x: bool,
    /// Draw the legend inside the plot (off where it would hide the data; then the caller
    /// explains the colours in a caption).
    pub legend: bool,
    /// Where the legend sits (away from where the data usually are).
    pub legend_corner: egui_plot::Corner,
}

impl Figure {
    pub fn new(id: &str, title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: vec![],
            x_range: None,
            y_range: None,
            log_x: false,
            legend: true,
            legend_corner: egui_plot::Corner::LeftTop,
        }
    }

    fn bounds(&self) -> ((f64, f64), (f64, f64)) {
        let mut xs = (f64::INFINITY, f64::NEG_INFINITY);
        let mut ys = (f64::INFINITY, f64::NEG_INFINITY);
        for s in &self.series {
            for p in &s.points {
                if !matches!(s.kind, Kind::VLine { .. }) {
                    ys = (ys.0.min(p[1]), ys.1.max(p[1]));
                }
                xs = (xs.0.min(p[0]), xs.1.max(p[0]));
                if let Kind::Bars { width } = s.kind {
                    xs = (xs.0.min(p[0] - width / 2.0), xs.1.max(p[0] + width / 2.0));
                    ys = (ys.0.min(0.0), ys.1);
                }
            }
        }
        let fix = |r: (f64, f64)| {
            if r.0.is_finite() && r.1 > r.0 {
                r
            } else if r.0.is_finite() {
                // One value (the first step of a live run): a range around it on its own scale.
                let m = if r.0 == 0.0 { 0.5 } else { r.0.abs() * 0.5 };
                (r.0 - m, r.0 + m)
            } else {
                (0.0, 1.0)
            }
        };
        // A 5% margin above and below the data, so a curve never runs along the frame.
        let pad = |r: (f64, f64)| {
            let m = (r.1 - r.0) * 0.05;
            (r.0 - m, r.1 + m)
        };
        (self.x_range.unwrap_or_else(|| fix(xs)), self.y_range.unwrap_or_else(|| pad(fix(ys))))
    }

    /// Draws the figure; returns the plot's response (for the PNG crop).
    pub fn show(&self, ui: &mut egui::Ui, height: f32) -> egui::Response {
        ui.label(egui::RichText::new(&self.title).strong());
        let ((x0, x1), (y0, y1)) = self.bounds();
        let log_x = self.log_x;
        let mut plot = Plot::new(&self.id)
            .height(height)
            .x_grid_spacer(nice_spacer(85.0, log_x))
            .y_grid_spacer(nice_spacer(32.0, false))
            .x_axis_label(self.x_label.clone())
            .y_axis_label(self.y_label.clone())
            .allow_scroll(false)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_boxed_zoom(false)
            // Bounds from the data on every frame (egui_plot's default_*_bounds are only the
            // first frame's, which froze the axes of a live run at its first step).
            .auto_bounds(true)
            .set_margin_fraction(egui::Vec2::ZERO)
            .include_x(x0)
            .include_x(x1)
            .include_y(y0)
            .include_y(y1);
        if self.legend {
            plot = plot.legend(Legend::default().position(self.legend_corner).background_alpha(0.85));
        }
        if log_x {
            plot = plot.x_axis_formatter(|m, _| fmt_pow10(m.value));
        } else {
            plot = plot.x_axis_formatter(|m, _| fmt_num(m.value));
        }
        // Both axes starting at 0 would print "0" twice at the corner ("00"): keep the x one.
        let corner = !log_x && x0 == 0.0 && y0 == 0.0;
        plot = plot.y_axis_formatter(move |m, _| if corner && m.value == 0.0 { String::new() } else { fmt_num(m.value) });
        let series = self.series.clone();
        plot.show(ui, move |pu| {
            for mut s in series {
                if !s.legend {
                    s.name = String::new();
                }
                match s.kind {
                    Kind::Line { width, dashed } => {
                        let mut l = Line::new(s.name.clone(), PlotPoints::from(s.points.clone())).color(s.color).width(width);
                        if dashed {
                            l = l.style(LineStyle::dashed_dense());
                        }
                        pu.line(l);
                    }
                    Kind::Bars { width } => {
                        let bars = s.points.iter().map(|p| Bar::new(p[0], p[1]).width(width * 0.95).fill(s.color.gamma_multiply(0.8))).collect();
                        pu.bar_chart(BarChart::new(s.name.clone(), bars).color(s.color));
                    }
                    Kind::Area => {
                        pu.polygon(Polygon::new(s.name.clone(), PlotPoints::from(s.points.clone())).fill_color(s.color).width(0.0).allow_hover(false));
                    }
                    Kind::VLine { dashed } => {
                        let mut v = VLine::new(s.name.clone(), s.points[0][0]).color(s.color).width(2.0);
                        if dashed {
                            v = v.style(LineStyle::dashed_loose());
                        }
                        pu.vline(v);
                    }
                    Kind::Labels => {
                        for (p, t) in s.points.iter().zip(&s.labels) {
                            pu.text(Text::new("", egui_plot::PlotPoint::new(p[0], p[1]), egui::RichText::new(t).size(10.0).color(s.color)));
                        }
                    }
                }
            }
        })
        .response
    }

    /// The figure as an SVG document (drawn from the data, like the screen).
    pub fn to_svg(&self) -> String {
        let (w, h) = (640.0, 420.0);
        let (ml, mr, mt, mb) = (64.0, 16.0, 36.0, 48.0);
        let ((x0, x1), (y0, y1)) = self.bounds();
        let sx = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
        let sy = |y: f64| h - mb - (y - y0) / (y1 - y0) * (h - mt - mb);
        let col = |c: Color32| format!("#{:02x}{:02x}{:02x}", c.r(), c.g(), c.b());
        let op = |c: Color32| c.a() as f64 / 255.0;
        let mut s = String::new();
        let _ =
            writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#);
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(s, r#"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#, w / 2.0, esc(&self.title));
        let _ = writeln!(s, r##"<clipPath id="c"><rect x="{ml}" y="{mt}" width="{}" height="{}"/></clipPath>"##, w - ml - mr, h - mt - mb);
        // Axes and ticks.
        for i in 0..=5 {
            let t = i as f64 / 5.0;
            let (xv, yv) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            let xl = if self.log_x { fmt_pow10(xv) } else { fmt_num(xv) };
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"##,
                sx(xv),
                mt,
                h - mb,
                h - mb + 16.0,
                esc(&xl)
            );
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#ddd"/><text x="{3}" y="{4}" text-anchor="end">{5}</text>"##,
                ml,
                sy(yv),
                w - mr,
                ml - 4.0,
                sy(yv) + 4.0,
                fmt_num(yv)
            );
        }
        let _ = writeln!(s, r##"<rect x="{ml}" y="{mt}" width="{}" height="{}" fill="none" stroke="#444"/>"##, w - ml - mr, h - mt - mb);
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, (ml + w - mr) / 2.0, h - 10.0, esc(&self.x_label));
        let _ = writeln!(s, r#"<text transform="translate(14,{}) rotate(-90)" text-anchor="middle">{}</text>"#, (mt + h - mb) / 2.0, esc(&self.y_label));
        let _ = writeln!(s, r#"<g clip-path="url(#c)">"#);
        for se in &self.series {
            match &se.kind {
                Kind::Line { width, dashed } => {
                    let pts: Vec<String> = se.points.iter().filter(|p| p[1].is_finite()).map(|p| format!("{:.2},{:.2}", sx(p[0]), sy(p[1]))).collect();
                    let dash = if *dashed { r#" stroke-dasharray="6,4""# } else { "" };
                    let _ = writeln!(s, r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}"{dash}/>"#, pts.join(" "), col(se.color), width);
                }
                Kind::Bars { width } => {
                    for p in &se.points {
                        let (xa, xb) = (sx(p[0] - width * 0.475), sx(p[0] + width * 0.475));
                        let (ya, yb) = (sy(p[1].max(0.0)), sy(p[1].min(0.0)));
                        let _ = writeln!(
                            s,
                            r#"<rect x="{xa:.2}" y="{ya:.2}" width="{:.2}" height="{:.2}" fill="{}" fill-opacity="0.8" stroke="{}"/>"#,
                            xb - xa,
                            yb - ya,
                            col(se.color),
                            col(se.color)
                        );
                    }
                }
                Kind::Area => {
                    let pts: Vec<String> = se.points.iter().map(|p| format!("{:.2},{:.2}", sx(p[0]), sy(p[1]))).collect();
                    let _ = writeln!(s, r#"<polygon points="{}" fill="{}" fill-opacity="{:.2}"/>"#, pts.join(" "), col(se.color), op(se.color).max(0.2));
                }
                Kind::VLine { dashed } => {
                    let x = sx(se.points[0][0]);
                    let dash = if *dashed { r#" stroke-dasharray="8,5""# } else { "" };
                    let _ = writeln!(s, r#"<line x1="{x:.2}" y1="{mt}" x2="{x:.2}" y2="{}" stroke="{}" stroke-width="2"{dash}/>"#, h - mb, col(se.color));
                }
                Kind::Labels => {
                    for (p, t) in se.points.iter().zip(&se.labels) {
                        let _ = writeln!(
                            s,
                            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="10" fill="{}">{}</text>"#,
                            sx(p[0]),
                            sy(p[1]),
                            col(se.color),
                            esc(t)
                        );
                    }
                }
            }
        }
        let _ = writeln!(s, "</g>");
        // Legend.
        let mut ly = mt + 14.0;
        for se in self.series.iter().filter(|x| x.legend && !x.name.is_empty()) {
            let _ = writeln!(
                s,
                r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                ml + 8.0,
                ly - 9.0,
                col(se.color),
                ml + 22.0,
                ly,
                esc(&se.name)
            );
            ly += 16.0;
        }
        s.push_str("</svg>\n");
        s
    }

    /// The figure's data as CSV: series, x, y (and label).
    pub fn to_csv(&self) -> String {
        let mut s = String::from("series,x,y,label\n");
        for se in &self.series {
            for (i, p) in se.points.iter().enumerate() {
                let x = if self.log_x { 10f64.powf(p[0]) } else { p[0] };
                let _ = writeln!(s, "{},{},{},{}", csv_field(&se.name), x, p[1], csv_field(se.labels.get(i).map(|s| s.as_str()).unwrap_or("")));
            }
        }
        s
    }
}

/// The smallest of 1, 2, 5 times a power of ten that is at least `x`.
fn nice_ceil(x: f64) -> f64 {
    let m = 10f64.powf(x.log10().floor());
    let n = x / m;
    m * if n <= 1.0 + 1e-9 {
        1.0
    } else if n <= 2.0 + 1e-9 {
        2.0
    } else if n <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    }
}

/// Grid lines at 1-2-5 steps with labelled major lines at least `label_px` points apart (egui_plot's
/// default powers-of-ten grid leaves a 0..1 axis with only "0" and "1" labelled). With `decades`
/// (a log10 axis) the major step is a whole number of decades.
pub fn nice_spacer(label_px: f64, decades: bool) -> impl Fn(egui_plot::GridInput) -> Vec<egui_plot::GridMark> {
    move |input| {
        // egui_plot passes the value span of 8 points as the base step.
        let per_pt = input.base_step_size / 8.0;
        let (lo, hi) = (input.bounds.0.min(input.bounds.1), input.bounds.0.max(input.bounds.1));
        if !(per_pt > 0.0 && per_pt.is_finite() && hi > lo && hi.is_finite() && lo.is_finite()) {
            return Vec::new();
        }
        let major = if decades { (per_pt * label_px).ceil().max(1.0) } else { nice_ceil(per_pt * label_px) };
        let lead = (major / 10f64.powf(major.log10().floor())).round();
        let minor = major / if lead == 2.0 { 4.0 } else { 5.0 };
        let (k0, k1) = ((lo / minor).floor() as i64, (hi / minor).ceil() as i64);
        if k1 - k0 > 2000 {
            return Vec::new();
        }
        (k0..=k1)
            .map(|k| {
                let v = k as f64 * minor;
                let is_major = ((v / major).round() * major - v).abs() < minor * 1e-6;
                egui_plot::GridMark { value: if v.abs() < minor * 1e-9 { 0.0 } else { v }, step_size: if is_major { major } else { minor } }
            })
            .collect()
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn csv_field(t: &str) -> String {
    if t.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", t.replace('"', "\"\""))
    } else {
        t.to_string()
    }
}

pub fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

pub fn fmt_pow10(x: f64) -> String {
    let v = 10f64.powf(x);
    if (x - x.round()).abs() < 1e-9 {
        if (-2.0..=3.0).contains(&x) {
            fmt_num(v)
        } else {
            format!("1e{}", x.round() as i64)
        }
    } else {
        format!("{v:.2e}")
    }
}

/// Where exports go: `<run dir>/exports`, else `exports/` in the current folder.
pub fn export_dir(run_dir: Option<&Path>) -> PathBuf {
    run_dir.map(|d| d.join("exports")).unwrap_or_else(|| PathBuf::from("exports"))
}

pub fn write_text(dir: &Path, name: &str, ext: &str, text: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let p = dir.join(format!("{}.{ext}", sanitize(name)));
    std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Writes an RGBA image as PNG.
pub fn write_png(path: &Path, img: &egui::ColorImage) -> Result<(), String> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), img.width() as u32, img.height() as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = img.pixels.iter().flat_map(|c| c.to_srgba_unmultiplied()).collect();
    w.write_image_data(&bytes).map_err(|e| e.to_string())?;
    Ok(())
}

/// Export buttons under a figure: PNG (screenshot crop), SVG and CSV. Returns a status message.
pub fn export_buttons(ui: &mut egui::Ui, fig: &Figure, plot_rect: egui::Rect, run_dir: Option<&Path>, status: &std::sync::mpsc::Sender<String>) {
    ui.horizontal(|ui| {
        ui.label(egui::RichText::new("Export:").small().weak());
        let dir = export_dir(run_dir);
        if ui.small_button("PNG").on_hover_text("Save this plot as a PNG image (a crop of the window)").clicked() {
            request_png(ui.ctx(), plot_rect, dir.join(format!("{}.png", sanitize(&fig.id))), status.clone());
        }
        if ui.small_button("SVG").on_hover_text("Save this plot as an SVG vector drawing").clicked() {
            let _ = status.send(match write_text(&dir, &fig.id, "svg", &fig.to_svg()) {
                Ok(p) => format!("saved {}", p.display()),
                Err(e) => format!("export failed: {e}"),
            });
        }
        if ui.small_button("CSV").on_hover_text("Save the plotted numbers as CSV").clicked() {
            let _ = status.send(match write_text(&dir, &fig.id, "csv", &fig.to_csv()) {
                Ok(p) => format!("saved {}", p.display()),
                Err(e) => format!("export failed: {e}"),
            });
        }
    });
}

/// Asks the renderer for a screenshot and writes the crop of `rect` as PNG when it arrives.
pub fn request_png(ctx: &egui::Context, rect: egui::Rect, path: PathBuf, status: std::sync::mpsc::Sender<String>) {
    let ppp = ctx.pixels_per_point();
    let ctx2 = ctx.clone();
    ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(egui::ScreenshotCallback::new(move |img| {
        let crop = img.region(&rect, Some(ppp));
        let msg = match path.parent().map(std::fs::create_dir_all).unwrap_or(Ok(())).map_err(|e| e.to_string()).and_then(|_| write_png(&path, &crop)) {
            Ok(()) => format!("saved {}", path.display()),
            Err(e) => format!("PNG export failed: {e}"),
        };
        let _ = status.send(msg);
        ctx2.request_repaint();
    })));
}

/// A table export button (CSV).
pub fn csv_button(ui: &mut egui::Ui, name: &str, csv: impl FnOnce() -> String, run_dir: Option<&Path>, status: &std::sync::mpsc::Sender<String>) {
    if ui.small_button("Export table (CSV)").on_hover_text("Save this table as CSV in the run's exports folder").clicked() {
        let _ = status.send(match write_text(&export_dir(run_dir), name, "csv", &csv()) {
            Ok(p) => format!("saved {}", p.display()),
            Err(e) => format!("export failed: {e}"),
        });
    }
}
