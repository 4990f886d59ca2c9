//! The compiler's one error type: a diagnostic with a code, labelled spans and help.
//!
//! Every problem the compiler finds is a [`Diagnostic`]; stages push into a shared
//! [`Diagnostics`] and keep going, so a run reports every error it can find.

use crate::source::{Sources, Span};
use std::fmt;

macro_rules! codes {
    ($($name:ident = $code:literal, $sev:ident, $title:literal;)*) => {
        /// Every kind of diagnostic. The table in `specs/language.md` lists the same codes
        /// (a test keeps the two in step).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($name,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];
            /// The stable code, e.g. `E0101`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $code,)* }
            }
            /// One-line description of the kind, for docs and `--format json`.
            pub fn title(self) -> &'static str {
                match self { $(Code::$name => $title,)* }
            }
            pub fn severity(self) -> Severity {
                match self { $(Code::$name => Severity::$sev,)* }
            }
        }
    };
}

codes! {
    // Loading and syntax.
    KdlSyntax = "E0001", Error, "the file is not valid KDL v2";
    NotUtf8 = "E0002", Error, "the file is not valid UTF-8";
    IncludeNotFound = "E0003", Error, "an included file cannot be read";
    IncludeCycle = "E0004", Error, "files include each other in a cycle";
    FileTooLarge = "E0005", Error, "a spec file is larger than the compiler accepts";
    InputUnreadable = "E0006", Error, "a path named on the command line cannot be read";
    NoSpecFiles = "E0007", Error, "a directory named on the command line holds no .kdl file";
    // Decoding nodes and values.
    UnknownNode = "E0101", Error, "unknown node";
    UnknownProperty = "E0102", Error, "unknown property";
    WrongType = "E0103", Error, "a value has the wrong type";
    MissingArgument = "E0104", Error, "a required argument or property is missing";
    UnexpectedArgument = "E0105", Error, "a node has more arguments than it takes";
    Duplicate = "E0106", Error, "a node or property is given twice where only one is allowed";
    InvalidChoice = "E0107", Error, "a value is not one of the allowed choices";
    ChildrenExpected = "E0108", Error, "a node needs a children block, or takes none";
    // Values.
    BadQuantity = "E0201", Error, "not a valid quantity";
    BadName = "E0202", Error, "a name is not a DNS-1123 label";
    ZeroResource = "E0203", Error, "cpu or memory is zero";
    PortOutOfRange = "E0204", Error, "a port is outside 1-65535";
    BadDuration = "E0205", Error, "not a valid duration";
    BadLabel = "E0206", Error, "not a valid label or annotation key or value";
    BadMac = "E0207", Error, "not a valid MAC address";
    BadCount = "E0208", Error, "count is outside 1-1000";
    BadInterpolation = "E0209", Error, "malformed ${...} interpolation";
    BadPath = "E0210", Error, "a path is not valid where it is used";
    BadSource = "E0211", Error, "a volume source URL has an unsupported scheme";
    // Resolving names.
    UnknownTemplate = "E0301", Error, "unknown template";
    UnknownInstancetype = "E0302", Error, "unknown instancetype";
    UnknownParam = "E0303", Error, "unknown param";
    InstancetypeOverride = "E0304", Error, "cpu or memory set on a vm that uses an instancetype";
    DuplicateMachine = "E0305", Error, "two machines have the same namespace and name";
    DuplicateDefinition = "E0306", Error, "a param, template or instancetype is defined twice";
    UnknownVar = "E0307", Error, "--var names a param that is not declared";
    MissingParam = "E0308", Error, "a param has no default and no --var value";
    IndexOutsideCount = "E0309", Error, "${index} used in a vm without count";
    DuplicateChild = "E0310", Error, "two disks, networks or ports of one vm have the same name";
    // Validating machines.
    NoDiskSource = "E0401", Error, "a disk has no source";
    TwoDiskSources = "E0402", Error, "a disk has more than one source";
    SecureBootNeedsEfi = "E0403", Error, "secure boot without EFI firmware";
    PortWithoutMasquerade = "E0404", Error, "a port on a vm with no masquerade network";
    BadNetworkBinding = "E0405", Error, "a network needs exactly one of masquerade or bridge";
    DuplicateBootOrder = "E0406", Error, "two disks have the same boot-order";
    TwoPodNetworks = "E0407", Error, "more than one network uses the pod network";
    VolumeWithoutSize = "E0408", Error, "a volume has no size";
    HostDiskWithoutCapacity = "E0409", Error, "a disk-or-create host-disk has no capacity";
    CloudInitConflict = "E0410", Error, "cloud-init data given twice, or ssh-key without cloud-config";
    CloudInitFile = "E0411", Error, "a cloud-init data file cannot be read";
    CdromSource = "E0412", Error, "a cdrom is backed by an empty-disk or a blank volume";
    NoMemory = "E0413", Error, "a vm has no memory";
    EmptyCloudInit = "E0414", Error, "a cloud-init block has no data";
    DuplicatePort = "E0415", Error, "two ports of one vm have the same number and protocol";
    // Policy files (vmform check).
    BadPolicy = "E0501", Error, "a policy rule or exception is malformed";
    BadCel = "E0502", Error, "a policy's CEL expression does not parse or evaluate";
    UnknownPolicyRule = "E0503", Error, "an exception names a rule that does not exist";
    // Warnings: the specs compile, but probably not to what was meant.
    EvictionCannotMigrate = "W0001", Warning, "eviction live-migrate on a vm whose storage cannot move";
    UnusedDefinition = "W0002", Warning, "a param, template or instancetype is never used";
    EmptyRun = "W0003", Warning, "the run defines no vm";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vmform::{}", self.as_str())
    }
}

/// A span with the text shown beside it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One problem found in the specs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    /// The main location; `None` only for problems with no place in a file
    /// (an undeclared `--var`, a run without machines).
    pub primary: Option<Label>,
    /// Further locations, possibly in other files ("first defined here").
    pub secondary: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic { code, message: message.into(), primary: None, secondary: vec![], help: None }
    }
    pub fn at(mut self, span: Span, text: impl Into<String>) -> Self {
        self.primary = Some(Label { span, text: text.into() });
        self
    }
    pub fn also(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label { span, text: text.into() });
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
    /// Problems with the paths given to a run rather than with spec contents; the CLI
    /// exits 2 for these, as for other usage and I/O errors.
    pub fn is_input_error(&self) -> bool {
        matches!(self.code, Code::InputUnreadable | Code::NoSpecFiles | Code::UnknownVar)
    }
    /// Ordering key: file, position, then code, so output order never depends on
    /// which thread or stage found a problem first.
    fn sort_key(&self) -> (Option<(u32, u32)>, Code, &str) {
        (self.primary.as_ref().map(|l| (l.span.file.0, l.span.start)), self.code, &self.message)
    }
}

/// What a run found: errors and warnings, kept apart by severity.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity() == Severity::Error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity() == Severity::Error)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity() == Severity::Warning)
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Sorted by location and de-duplicated: errors first, then warnings.
    /// Invariant: diagnostics print in the same order whichever stage or thread found them.
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut v: Vec<&Diagnostic> = self.items.iter().collect();
        // The whole diagnostic breaks ties, so equal copies end up adjacent for dedup.
        v.sort_by(|a, b| (a.severity(), a.sort_key(), *a).cmp(&(b.severity(), b.sort_key(), *b)));
        v.dedup_by(|a, b| a == b);
        v
    }
}

impl FromIterator<Diagnostic> for Diagnostics {
    fn from_iter<I: IntoIterator<Item = Diagnostic>>(items: I) -> Self {
        Diagnostics { items: items.into_iter().collect() }
    }
}

/// A diagnostic as a user sees it: file, line and column resolved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Located {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub code: &'static str,
    pub severity: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn locate(&self, sources: &Sources) -> Located {
        let (file, line, column) = match &self.primary {
            Some(l) => {
                let f = sources.get(l.span.file);
                let (line, col) = f.line_col(l.span.start as usize);
                (Some(f.path.display().to_string()), Some(line), Some(col))
            }
            None => (None, None, None),
        };
        Located {
            file,
            line,
            column,
            code: self.code.as_str(),
            severity: self.severity().as_str(),
            message: self.message.clone(),
            label: self.primary.as_ref().map(|l| l.text.clone()),
            help: self.help.clone(),
        }
    }

    /// A miette report for this diagnostic, with its source attached.
    pub fn report(&self, sources: &Sources) -> Report {
        let file = self.primary.as_ref().map(|l| l.span.file);
        let source = file.map(|f| {
            let sf = sources.get(f);
            miette::NamedSource::new(sf.path.display().to_string(), sf.text.clone())
        });
        let mut labels = vec![];
        let mut related = vec![];
        for (i, l) in self.primary.iter().chain(&self.secondary).enumerate() {
            let ls = miette::LabeledSpan::new_with_span(Some(l.text.clone()), l.span.range());
            if Some(l.span.file) == file {
                labels.push(if i == 0 { miette::LabeledSpan::new_primary_with_span(Some(l.text.clone()), l.span.range()) } else { ls });
            } else {
                // A label in another file becomes a related report with its own source.
                let sf = sources.get(l.span.file);
                related.push(Report {
                    code: None,
                    severity: miette::Severity::Advice,
                    message: l.text.clone(),
                    help: None,
                    source: Some(miette::NamedSource::new(sf.path.display().to_string(), sf.text.clone())),
                    labels: vec![miette::LabeledSpan::new_primary_with_span(Some(l.text.clone()), l.span.range())],
                    related: vec![],
                });
            }
        }
        Report {
            code: Some(self.code),
            severity: match self.severity() {
                Severity::Error => miette::Severity::Error,
                Severity::Warning => miette::Severity::Warning,
            },
            message: self.message.clone(),
            help: self.help.clone(),
            source,
            labels,
            related,
        }
    }
}

/// A self-contained miette diagnostic, ready for any miette handler.
#[derive(Debug)]
pub struct Report {
    code: Option<Code>,
    severity: miette::Severity,
    message: String,
    help: Option<String>,
    source: Option<miette::NamedSource<std::sync::Arc<str>>>,
    labels: Vec<miette::LabeledSpan>,
    related: Vec<Report>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.code.map(|c| Box::new(c) as Box<dyn fmt::Display>)
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().cloned()))
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(self.related.iter().map(|r| r as &dyn miette::Diagnostic)))
    }
}
