//! Namespace-aware extraction of the few SOAP/WS-Discovery fields PeerDist
//! uses, on top of quick-xml.
//!
//! Elements are matched by namespace URI and local name, never by prefix.
//! The walker keeps a bounded stack of known elements and captures the text of
//! the leaves discovery needs; everything else is skipped. Input size, depth
//! and duplicate fields are bounded, DTDs are refused, and every failure is a
//! [`DecodeError`] — garbage never panics.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, QName, ResolveResult};
use quick_xml::NsReader;

use super::{NS_PEERDIST, NS_SOAP, NS_WSA, NS_WSD};
use crate::proto::codec::DecodeError;

/// Deepest element nesting accepted; real envelopes are 6 deep.
const MAX_DEPTH: usize = 32;

/// Longest captured text of one field; the message limit bounds it anyway,
/// this keeps a single field from dominating.
const MAX_FIELD_LEN: usize = 60 * 1024;

const XML: DecodeError = DecodeError::Invalid { what: "XML syntax" };

/// Which namespace an element or QName value resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Soap,
    Wsa,
    Wsd,
    PeerDist,
    Other,
}

fn classify(r: &ResolveResult<'_>) -> Ns {
    match r {
        ResolveResult::Bound(Namespace(ns)) => match *ns {
            n if n == NS_SOAP.as_bytes() => Ns::Soap,
            n if n == NS_WSA.as_bytes() => Ns::Wsa,
            n if n == NS_WSD.as_bytes() => Ns::Wsd,
            n if n == NS_PEERDIST.as_bytes() => Ns::PeerDist,
            _ => Ns::Other,
        },
        _ => Ns::Other,
    }
}

/// The elements the walker knows, by position in the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Envelope,
    Header,
    Body,
    To,
    Action,
    MessageId,
    RelatesTo,
    AppSequence,
    Probe,
    ProbeMatches,
    ProbeMatch,
    EndpointReference,
    Address,
    Types,
    Scopes,
    XAddrs,
    MetadataVersion,
    PeerDistData,
    BlockCount,
    SegmentAges,
    Other,
}

impl Node {
    fn child(self, ns: Ns, local: &[u8]) -> Node {
        use Node::*;
        match (self, ns, local) {
            (Envelope, Ns::Soap, b"Header") => Header,
            (Envelope, Ns::Soap, b"Body") => Body,
            (Header, Ns::Wsa, b"To") => To,
            (Header, Ns::Wsa, b"Action") => Action,
            (Header, Ns::Wsa, b"MessageID") => MessageId,
            (Header, Ns::Wsa, b"RelatesTo") => RelatesTo,
            (Header, Ns::Wsd, b"AppSequence") => AppSequence,
            (Body, Ns::Wsd, b"Probe") => Probe,
            (Body, Ns::Wsd, b"ProbeMatches") => ProbeMatches,
            (ProbeMatches, Ns::Wsd, b"ProbeMatch") => ProbeMatch,
            (ProbeMatch, Ns::Wsa, b"EndpointReference") => EndpointReference,
            (EndpointReference, Ns::Wsa, b"Address") => Address,
            (Probe | ProbeMatch, Ns::Wsd, b"Types") => Types,
            (Probe | ProbeMatch, Ns::Wsd, b"Scopes") => Scopes,
            (ProbeMatch, Ns::Wsd, b"XAddrs") => XAddrs,
            (ProbeMatch, Ns::Wsd, b"MetadataVersion") => MetadataVersion,
            (ProbeMatch, Ns::PeerDist, b"PeerDistData") => PeerDistData,
            (PeerDistData, Ns::PeerDist, b"BlockCount") => BlockCount,
            (PeerDistData, Ns::PeerDist, b"SegmentAges") => SegmentAges,
            _ => Other,
        }
    }

    fn captures_text(self) -> bool {
        use Node::*;
        matches!(
            self,
            To | Action
                | MessageId
                | RelatesTo
                | Address
                | Types
                | Scopes
                | XAddrs
                | MetadataVersion
                | BlockCount
                | SegmentAges
        )
    }
}

/// The PeerDist types named in a `wsd:Types` list, resolved by namespace.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Types {
    /// `PeerDist:PeerDistData` was listed.
    pub v1: bool,
    /// `PeerDist:PeerDistDataV2` was listed.
    pub v2: bool,
}

/// Which body element the envelope carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Probe,
    ProbeMatch,
}

/// The raw fields of one SOAP envelope (text trimmed, entities resolved).
#[derive(Debug, Default)]
pub(crate) struct Envelope {
    pub action: Option<String>,
    pub to: Option<String>,
    pub message_id: Option<String>,
    pub relates_to: Option<String>,
    /// `(InstanceId, MessageNumber)` attribute texts.
    pub app_sequence: Option<(Option<String>, Option<String>)>,
    pub body: Option<BodyKind>,
    pub endpoint: Option<String>,
    pub types: Option<Types>,
    pub scopes: Option<String>,
    /// The `MatchBy` attribute of `wsd:Scopes`, if present.
    pub match_by: Option<String>,
    pub xaddrs: Option<String>,
    pub metadata_version: Option<String>,
    pub block_count: Option<String>,
    pub segment_ages: Option<String>,
}

fn set_once(slot: &mut Option<String>, v: String, what: &'static str) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Invalid { what });
    }
    *slot = Some(v);
    Ok(())
}

/// Unqualified attribute lookup (WS-Discovery attributes carry no prefix).
fn attr(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, DecodeError> {
    for a in e.attributes() {
        let a = a.map_err(|_| DecodeError::Invalid {
            what: "XML attribute",
        })?;
        if a.key.as_ref() == name {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Explicit1_0)
                .map_err(|_| DecodeError::Invalid {
                    what: "XML attribute value",
                })?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// The value of a predefined or character entity reference.
fn resolve_ref(name: &str, is_char: Option<char>) -> Result<char, DecodeError> {
    if let Some(c) = is_char {
        return Ok(c);
    }
    match name {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(DecodeError::Invalid {
            what: "XML entity reference",
        }),
    }
}

/// Walk one envelope and collect its discovery fields.
pub(crate) fn parse(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let mut reader = NsReader::from_reader(bytes);
    let mut env = Envelope::default();
    let mut stack: Vec<Node> = Vec::with_capacity(8);
    let mut text = String::new();
    let mut seen_root = false;
    loop {
        let event = reader.read_event().map_err(|_| XML)?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            if stack.last().is_some_and(|n| n.captures_text()) {
                return Err(DecodeError::Invalid {
                    what: "element inside a text-only field",
                });
            }
            let (res, local) = reader.resolver().resolve_element(e.name());
            let ns = classify(&res);
            let node = match stack.last() {
                None => {
                    if seen_root {
                        return Err(DecodeError::Invalid {
                            what: "second root element",
                        });
                    }
                    seen_root = true;
                    if ns == Ns::Soap && local.as_ref() == b"Envelope" {
                        Node::Envelope
                    } else {
                        return Err(DecodeError::Invalid {
                            what: "root is not soap:Envelope",
                        });
                    }
                }
                Some(parent) => parent.child(ns, local.as_ref()),
            };
            if stack.len() >= MAX_DEPTH {
                return Err(DecodeError::LimitExceeded {
                    what: "XML nesting depth",
                    max: MAX_DEPTH as u64,
                });
            }
            match node {
                Node::AppSequence => {
                    if env.app_sequence.is_some() {
                        return Err(DecodeError::Invalid {
                            what: "duplicate wsd:AppSequence",
                        });
                    }
                    env.app_sequence = Some((attr(e, b"InstanceId")?, attr(e, b"MessageNumber")?));
                }
                Node::Probe | Node::ProbeMatch => {
                    if env.body.is_some() {
                        return Err(DecodeError::Invalid {
                            what: "more than one Probe/ProbeMatch",
                        });
                    }
                    env.body = Some(if node == Node::Probe {
                        BodyKind::Probe
                    } else {
                        BodyKind::ProbeMatch
                    });
                }
                Node::Scopes => {
                    if let Some(m) = attr(e, b"MatchBy")? {
                        set_once(&mut env.match_by, m, "duplicate wsd:Scopes")?;
                    }
                }
                _ => {}
            }
            text.clear();
            if empty {
                finish(&mut env, node, "", &reader)?;
            } else {
                stack.push(node);
            }
            continue;
        }
        let capturing = stack.last().is_some_and(|n| n.captures_text());
        match event {
            Event::End(_) => {
                let node = stack.pop().ok_or(XML)?;
                if node.captures_text() {
                    let t = std::mem::take(&mut text);
                    finish(&mut env, node, t.trim(), &reader)?;
                }
            }
            Event::Text(t) if capturing => {
                let s = t.decode().map_err(|_| DecodeError::Invalid {
                    what: "XML text encoding",
                })?;
                push_text(&mut text, &s)?;
            }
            Event::CData(t) if capturing => {
                let s = t.decode().map_err(|_| DecodeError::Invalid {
                    what: "XML CDATA encoding",
                })?;
                push_text(&mut text, &s)?;
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|_| XML)?;
                let ch = r.resolve_char_ref().map_err(|_| DecodeError::Invalid {
                    what: "XML character reference",
                })?;
                let c = resolve_ref(&name, ch)?;
                if capturing {
                    let mut buf = [0u8; 4];
                    push_text(&mut text, c.encode_utf8(&mut buf))?;
                }
            }
            Event::DocType(_) => {
                return Err(DecodeError::Invalid {
                    what: "DOCTYPE not allowed",
                })
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() || !seen_root {
        return Err(DecodeError::Truncated {
            what: "SOAP envelope",
        });
    }
    Ok(env)
}

fn push_text(buf: &mut String, s: &str) -> Result<(), DecodeError> {
    if buf.len().saturating_add(s.len()) > MAX_FIELD_LEN {
        return Err(DecodeError::LimitExceeded {
            what: "XML field length",
            max: MAX_FIELD_LEN as u64,
        });
    }
    buf.push_str(s);
    Ok(())
}

fn finish(
    env: &mut Envelope,
    node: Node,
    text: &str,
    reader: &NsReader<&[u8]>,
) -> Result<(), DecodeError> {
    let t = text.to_owned();
    match node {
        Node::To => set_once(&mut env.to, t, "duplicate wsa:To"),
        Node::Action => set_once(&mut env.action, t, "duplicate wsa:Action"),
        Node::MessageId => set_once(&mut env.message_id, t, "duplicate wsa:MessageID"),
        Node::RelatesTo => set_once(&mut env.relates_to, t, "duplicate wsa:RelatesTo"),
        Node::Address => set_once(&mut env.endpoint, t, "duplicate wsa:Address"),
        Node::Scopes => set_once(&mut env.scopes, t, "duplicate wsd:Scopes"),
        Node::XAddrs => set_once(&mut env.xaddrs, t, "duplicate wsd:XAddrs"),
        Node::MetadataVersion => set_once(
            &mut env.metadata_version,
            t,
            "duplicate wsd:MetadataVersion",
        ),
        Node::BlockCount => set_once(&mut env.block_count, t, "duplicate PeerDist:BlockCount"),
        Node::SegmentAges => set_once(&mut env.segment_ages, t, "duplicate PeerDist:SegmentAges"),
        Node::Types => {
            if env.types.is_some() {
                return Err(DecodeError::Invalid {
                    what: "duplicate wsd:Types",
                });
            }
            let mut types = Types::default();
            for qname in text.split_ascii_whitespace() {
                // QName values resolve against the bindings in scope at the
                // element (still in scope until after its End event).
                let (res, local) = reader.resolver().resolve_element(QName(qname.as_bytes()));
                if classify(&res) == Ns::PeerDist {
                    match local.as_ref() {
                        b"PeerDistData" => types.v1 = true,
                        b"PeerDistDataV2" => types.v2 = true,
                        _ => {}
                    }
                }
            }
            env.types = Some(types);
            Ok(())
        }
        _ => Ok(()),
    }
}
