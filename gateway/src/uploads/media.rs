//! What an upload's bytes are: the type sniffed from its first bytes, an
//! image's metadata stripped (EXIF with its GPS location, XMP, IPTC,
//! comments) without re-encoding it, and an image's dimensions and
//! thumbnail, decoded within limits so that a decompression bomb is
//! refused rather than allocated.

use std::io::Cursor;

/// Bytes of a body's start the type is sniffed from.
pub const SNIFF_BYTES: usize = 4096;
/// The long side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 320;
/// Pixels an image may have on a side for it to be decoded.
pub const MAX_SIDE: u32 = 12_000;
/// Memory a decoding may take.
pub const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

/// The types sniffing tells apart; the default allow-list is all of them
/// but the last.
pub const TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "application/zip",
    "text/plain",
    "application/octet-stream",
];

/// The type of a file from its first bytes (at most [`SNIFF_BYTES`] of
/// them; `complete` when that is the whole file). Text is UTF-8 without
/// control characters other than tab, newline, carriage return and form
/// feed; HTML is text.
pub fn sniff(head: &[u8], complete: bool) -> &'static str {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        "image/gif"
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        "image/webp"
    } else if head.starts_with(b"%PDF-") {
        "application/pdf"
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        "application/zip"
    } else if !head.is_empty() && is_text(head, complete) {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

fn is_text(head: &[u8], complete: bool) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(s) => s,
        // A character cut by the end of the sniffed part is not an error.
        Err(e) if !complete && e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
        Err(_) => return false,
    };
    text.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

/// Whether browsers may show this type inline.
pub fn is_safe_image(content_type: &str) -> bool {
    matches!(content_type, "image/png" | "image/jpeg" | "image/gif" | "image/webp")
}

/// `bytes` without their metadata, for the types that carry it (JPEG,
/// PNG, WebP); `None` when the structure does not parse.
pub fn strip(content_type: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    match content_type {
        "image/jpeg" => strip_jpeg(bytes),
        "image/png" => strip_png(bytes),
        "image/webp" => strip_webp(bytes),
        _ => Some(bytes.to_vec()),
    }
}

/// Keeps APP0 (JFIF), APP2 (ICC colour profile) and APP14 (Adobe colour
/// transform); drops every other application segment (EXIF and XMP are
/// APP1, IPTC APP13) and comments.
fn strip_jpeg(b: &[u8]) -> Option<Vec<u8>> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..2]);
    let mut i = 2;
    loop {
        if *b.get(i)? != 0xFF {
            return None;
        }
        while *b.get(i + 1)? == 0xFF {
            i += 1; // fill bytes
        }
        let marker = b[i + 1];
        if marker == 0xDA || marker == 0xD9 {
            // Start of scan (entropy-coded data follows) or end of image.
            out.extend_from_slice(&b[i..]);
            return Some(out);
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            out.extend_from_slice(&b[i..i + 2]);
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
        let end = i.checked_add(2 + len).filter(|&e| e <= b.len() && len >= 2)?;
        let keep = !matches!(marker, 0xE1 | 0xE3..=0xED | 0xEF | 0xFE);
        if keep {
            out.extend_from_slice(&b[i..end]);
        }
        i = end;
    }
}

/// Drops `eXIf`, `tEXt`, `zTXt`, `iTXt` and `tIME` chunks.
fn strip_png(b: &[u8]) -> Option<Vec<u8>> {
    const SIG: usize = 8;
    if b.len() < SIG {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..SIG]);
    let mut i = SIG;
    while i < b.len() {
        let len = u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize;
        let kind = b.get(i + 4..i + 8)?;
        let end = i.checked_add(12 + len).filter(|&e| e <= b.len())?;
        if !matches!(kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME") {
            out.extend_from_slice(&b[i..end]);
        }
        i = end;
        if kind == b"IEND" {
            break;
        }
    }
    Some(out)
}

/// Drops the `EXIF` and `XMP ` chunks and clears their flags in `VP8X`.
fn strip_webp(b: &[u8]) -> Option<Vec<u8>> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WEBP" {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..12]);
    let mut i = 12;
    while i + 8 <= b.len() {
        let kind = &b[i..i + 4];
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().ok()?) as usize;
        let end = i.checked_add(8 + len + (len & 1))?.min(b.len());
        if i + 8 + len > b.len() {
            return None;
        }
        match kind {
            b"EXIF" | b"XMP " => {}
            b"VP8X" if len >= 1 => {
                let at = out.len() + 8;
                out.extend_from_slice(&b[i..end]);
                out[at] &= !(0x08 | 0x04);
            }
            _ => out.extend_from_slice(&b[i..end]),
        }
        i = end;
    }
    let riff = u32::try_from(out.len() - 8).ok()?;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    Some(out)
}

/// An image's size and thumbnail.
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// The thumbnail's bytes: a JPEG for a JPEG, a PNG otherwise.
    pub thumbnail: Vec<u8>,
}

/// Decodes an image within [`MAX_SIDE`] and [`MAX_DECODE_BYTES`]; `None`
/// when it does not decode or passes the limits.
pub fn picture(content_type: &str, bytes: &[u8]) -> Option<Picture> {
    let format = match content_type {
        "image/png" => image::ImageFormat::Png,
        "image/jpeg" => image::ImageFormat::Jpeg,
        "image/gif" => image::ImageFormat::Gif,
        "image/webp" => image::ImageFormat::WebP,
        _ => return None,
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let img = reader.decode().ok()?;
    let (width, height) = (img.width(), img.height());
    let small = if width.max(height) > THUMBNAIL_SIDE { img.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE) } else { img };
    let mut thumbnail = Vec::new();
    if format == image::ImageFormat::Jpeg {
        image::DynamicImage::ImageRgb8(small.to_rgb8())
            .write_to(&mut Cursor::new(&mut thumbnail), image::ImageFormat::Jpeg)
            .ok()?;
    } else {
        small.write_to(&mut Cursor::new(&mut thumbnail), image::ImageFormat::Png).ok()?;
    }
    Some(Picture { width, height, thumbnail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(width, height, image::Rgba([200, 10, 10, 255]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgba8(img).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn types_are_sniffed_from_the_bytes() {
        assert_eq!(sniff(&png(2, 2), true), "image/png");
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0], true), "image/jpeg");
        assert_eq!(sniff(b"GIF89a....", true), "image/gif");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ", true), "image/webp");
        assert_eq!(sniff(b"%PDF-1.7", true), "application/pdf");
        assert_eq!(sniff(b"PK\x03\x04", true), "application/zip");
        assert_eq!(sniff(b"<html><script>alert(1)</script></html>", true), "text/plain");
        assert_eq!(sniff("h\u{e9}".as_bytes(), true), "text/plain");
        assert_eq!(sniff(&"h\u{e9}".as_bytes()[..2], false), "text/plain", "a character cut at the sniff limit");
        assert_eq!(sniff(b"\x00\x01\x02", true), "application/octet-stream");
        assert_eq!(sniff(b"", true), "application/octet-stream");
    }

    #[test]
    fn jpeg_metadata_segments_are_dropped_and_the_rest_kept() {
        let app0 = [0xFF, 0xE0, 0x00, 0x04, b'J', b'F'];
        let exif = [0xFF, 0xE1, 0x00, 0x08, b'E', b'x', b'i', b'f', 0, 0];
        let com = [0xFF, 0xFE, 0x00, 0x04, b'h', b'i'];
        let scan = [0xFF, 0xDA, 0x00, 0x02, 1, 2, 3, 0xFF, 0xD9];
        let file = [&[0xFF, 0xD8][..], &app0, &exif, &com, &scan].concat();
        assert_eq!(strip("image/jpeg", &file).unwrap(), [&[0xFF, 0xD8][..], &app0, &scan].concat());
        assert_eq!(strip("image/jpeg", &file[..9]), None, "a cut segment does not parse");
    }

    #[test]
    fn png_text_and_exif_chunks_are_dropped() {
        let file = png(3, 2);
        let mut with = file[..33].to_vec(); // signature and IHDR
        for (kind, data) in [(&b"tEXt"[..], &b"GPS\x0048.85,2.35"[..]), (b"eXIf", b"MM\x00*")] {
            with.extend_from_slice(&(data.len() as u32).to_be_bytes());
            with.extend_from_slice(kind);
            with.extend_from_slice(data);
            with.extend_from_slice(&[0, 0, 0, 0]);
        }
        with.extend_from_slice(&file[33..]);
        assert_eq!(strip("image/png", &with).unwrap(), file);
    }

    #[test]
    fn pictures_get_their_size_and_a_bounded_thumbnail() {
        let p = picture("image/png", &png(800, 400)).unwrap();
        assert_eq!((p.width, p.height), (800, 400));
        let thumb = image::load_from_memory(&p.thumbnail).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (320, 160));
        assert!(picture("image/png", b"\x89PNG\r\n\x1a\nnot really").is_none());
    }

    #[test]
    fn an_image_larger_than_the_limits_is_not_decoded() {
        // A tiny file that claims to be 20000 x 20000 pixels.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        assert!(picture("image/png", &bomb).is_none());
    }
}
