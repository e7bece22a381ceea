//! NDJSON, CSV and Parquet writers, one item at a time.

use std::io::Write;

use crate::fields::{COLUMNS, Fields};
use crate::{ExportError, ExportItem, Format};

/// Encoded bytes a Parquet row group may buffer before it is written out.
#[cfg(feature = "parquet")]
pub const PARQUET_ROW_GROUP_BYTES: usize = 2 << 20;

/// Writes items in a tabular format ([`Format::Ndjson`], [`Format::Csv`], [`Format::Parquet`]).
pub struct TabularWriter<W: Write + Send> {
    inner: Inner<W>,
    rows: u64,
}

impl<W: Write + Send> std::fmt::Debug for TabularWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TabularWriter")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

enum Inner<W: Write + Send> {
    Ndjson(W),
    Csv(CsvOut<W>),
    #[cfg(feature = "parquet")]
    Parquet(Box<parquet_out::ParquetOut<W>>),
}

/// Bytes of CSV gathered before they are written to the destination.
const CSV_BUFFER: usize = 64 * 1024;

/// RFC 4180 CSV as the `csv` crate writes it with CRLF terminators and its default
/// "necessary" quoting (the bytes are the same; a test compares them): a field is quoted when it
/// holds a comma, a double quote, CR or LF, and a double quote inside is doubled. Written here
/// because the event column is full of quotes, which the crate doubles through a state
/// machine a byte at a time (a third of a CSV export's CPU).
struct CsvOut<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> CsvOut<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(CSV_BUFFER + 8 * 1024),
        }
    }

    fn record(&mut self, fields: &[&[u8]]) -> std::io::Result<()> {
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            csv_field(&mut self.buf, field);
        }
        self.buf.extend_from_slice(b"\r\n");
        if self.buf.len() >= CSV_BUFFER {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Appends one CSV field, quoted if it must be.
fn csv_field(out: &mut Vec<u8>, field: &[u8]) {
    if !field
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
    {
        out.extend_from_slice(field);
        return;
    }
    // Room for the worst case (every byte a quote) and 8 bytes to spare, then eight bytes at a
    // time: each word is copied whole, and taken up to its first quote, after which a second
    // quote goes (JSON text has a quote every dozen bytes or so; runs between them are
    // copied a word at a time, not a byte at a time).
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    let start = out.len();
    out.resize(start + 2 + field.len() * 2 + 8, 0);
    let dst = &mut out[start..];
    dst[0] = b'"';
    let mut n = 1;
    let mut i = 0;
    while let Some(chunk) = field.get(i..i + 8) {
        dst[n..n + 8].copy_from_slice(chunk);
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let x = w ^ QUOTES;
        // The high bit of each byte that is a quote (exact for the lowest one).
        let quotes = x.wrapping_sub(ONES) & !x & HIGHS;
        if quotes == 0 {
            n += 8;
            i += 8;
        } else {
            let upto = (quotes.trailing_zeros() / 8) as usize + 1;
            n += upto;
            dst[n] = b'"';
            n += 1;
            i += upto;
        }
    }
    for &b in &field[i..] {
        dst[n] = b;
        dst[n + 1] = b'"';
        n += 1 + usize::from(b == b'"');
    }
    dst[n] = b'"';
    out.truncate(start + n + 1);
}

impl<W: Write + Send> TabularWriter<W> {
    /// A writer of `format` into `out` (CSV writes its header row at once).
    pub fn new(format: Format, out: W) -> Result<Self, ExportError> {
        let inner = match format {
            Format::Ndjson => Inner::Ndjson(out),
            Format::Csv => {
                let mut w = CsvOut::new(out);
                let header: Vec<&[u8]> = COLUMNS.iter().map(|c| c.as_bytes()).collect();
                w.record(&header)?;
                Inner::Csv(w)
            }
            #[cfg(feature = "parquet")]
            Format::Parquet => Inner::Parquet(Box::new(parquet_out::ParquetOut::new(out)?)),
            #[cfg(not(feature = "parquet"))]
            Format::Parquet => {
                return Err(ExportError::Format(
                    "this build has no Parquet writer".into(),
                ));
            }
            Format::Bundle => {
                return Err(ExportError::Format(
                    "an evidence bundle is written by bundle::BundleWriter".into(),
                ));
            }
        };
        Ok(Self { inner, rows: 0 })
    }

    /// Appends one item.
    pub fn write(&mut self, item: &ExportItem<'_>) -> Result<(), ExportError> {
        self.write_with_derived(item, None)
    }

    /// Appends one item with its derived fields: `derived` is the JSON object the search API
    /// answers as an item's `"derived"` (class, description, object). NDJSON writes it as the
    /// item's `"derived"` member, so an NDJSON line is the item exactly as search returns it;
    /// CSV and Parquet have fixed columns ([`COLUMNS`]) and leave it out.
    pub fn write_with_derived(
        &mut self,
        item: &ExportItem<'_>,
        derived: Option<&[u8]>,
    ) -> Result<(), ExportError> {
        match &mut self.inner {
            Inner::Ndjson(w) => write_ndjson(w, item, derived)?,
            Inner::Csv(w) => {
                let f = Fields::of(item)?;
                let index = f.index.to_string();
                let fields: [&[u8]; 16] = [
                    opt(&f.event_time),
                    f.received_at.as_bytes(),
                    f.account.as_bytes(),
                    index.as_bytes(),
                    opt(&f.id),
                    opt(&f.action),
                    opt(&f.outcome),
                    opt(&f.severity),
                    opt(&f.initiator_id),
                    opt(&f.initiator_name),
                    opt(&f.target_id),
                    opt(&f.target_name),
                    opt(&f.target_type_uri),
                    opt(&f.correlation_id),
                    opt(&f.message),
                    f.event.as_bytes(),
                ];
                w.record(&fields)?;
            }
            #[cfg(feature = "parquet")]
            Inner::Parquet(p) => p.write(&Fields::of(item)?)?,
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends rows gathered by [`ParquetRows`] (a Parquet writer only).
    #[cfg(feature = "parquet")]
    pub fn write_rows(&mut self, batch: ParquetBatch) -> Result<(), ExportError> {
        let Inner::Parquet(p) = &mut self.inner else {
            return Err(ExportError::Format(
                "Parquet rows given to a writer of another format".into(),
            ));
        };
        let n = batch.rows();
        if let Some(b) = &batch.0 {
            p.write_batch(b)?;
        }
        self.rows += n as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes what is buffered (Parquet: the last row group and the footer) and hands back the
    /// destination.
    pub fn finish(self) -> Result<W, ExportError> {
        match self.inner {
            Inner::Ndjson(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Inner::Csv(w) => Ok(w.finish()?),
            #[cfg(feature = "parquet")]
            Inner::Parquet(p) => p.finish(),
        }
    }
}

/// Rows of a Parquet export gathered into Arrow columns, to be written by
/// [`TabularWriter::write_rows`]. It is `Send` and needs no writer, so a caller can read the
/// columns out of the events (and build the columns) on one thread while another encodes and
/// compresses the pages: the two halves of a Parquet export's work overlap. The file is the one
/// [`TabularWriter::write`] makes of the same items (the same rows; where pages and row groups
/// end may differ).
#[cfg(feature = "parquet")]
pub struct ParquetRows(parquet_out::Rows);

#[cfg(feature = "parquet")]
impl std::fmt::Debug for ParquetRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetRows")
            .field("rows", &self.0.len())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "parquet")]
impl Default for ParquetRows {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "parquet")]
impl ParquetRows {
    /// No rows yet.
    pub fn new() -> Self {
        Self(parquet_out::Rows::new())
    }

    /// Appends one item's columns ([`COLUMNS`]).
    pub fn push(&mut self, item: &ExportItem<'_>) -> Result<(), ExportError> {
        self.0.push(&Fields::of(item)?);
        Ok(())
    }

    /// Rows gathered and not yet taken.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no rows wait.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The rows gathered so far, as a batch for [`TabularWriter::write_rows`]; gathering
    /// starts again empty.
    pub fn take(&mut self) -> Result<ParquetBatch, ExportError> {
        Ok(ParquetBatch(self.0.take()?))
    }
}

/// Rows taken from [`ParquetRows`].
#[cfg(feature = "parquet")]
pub struct ParquetBatch(Option<arrow_array::RecordBatch>);

#[cfg(feature = "parquet")]
impl std::fmt::Debug for ParquetBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetBatch")
            .field("rows", &self.rows())
            .finish()
    }
}

#[cfg(feature = "parquet")]
impl ParquetBatch {
    /// How many rows it holds.
    pub fn rows(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.num_rows())
    }
}

/// The bytes of an optional text field (empty when absent).
fn opt<'a>(v: &'a Option<std::borrow::Cow<'_, str>>) -> &'a [u8] {
    v.as_deref().unwrap_or("").as_bytes()
}

/// `{"account":…,"index":…,"receivedAt":…,"event":<stored bytes>}` and a newline: the API item
/// with the event's bytes copied as they are stored.
fn write_ndjson(
    w: &mut impl Write,
    item: &ExportItem<'_>,
    derived: Option<&[u8]>,
) -> Result<(), ExportError> {
    let received =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(item.received_at_unix_nanos))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    w.write_all(b"{\"account\":")?;
    serde_json::to_writer(&mut *w, item.account).map_err(std::io::Error::from)?;
    write!(
        w,
        ",\"index\":{},\"receivedAt\":\"{}\",\"event\":",
        item.index,
        crate::format_time(received)
    )?;
    w.write_all(item.bytes)?;
    if let Some(d) = derived {
        w.write_all(b",\"derived\":")?;
        w.write_all(d)?;
    }
    w.write_all(b"}\n")?;
    Ok(())
}

#[cfg(feature = "parquet")]
mod parquet_out {
    use std::io::Write;
    use std::sync::Arc;

    use arrow_array::builder::{
        StringBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder, UInt64Builder,
    };
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    use super::PARQUET_ROW_GROUP_BYTES;
    use crate::ExportError;
    use crate::fields::{COLUMNS, Fields};

    /// Rows gathered into one Arrow batch before it is handed to the Parquet writer.
    const BATCH_ROWS: usize = 256;

    fn schema() -> SchemaRef {
        let utc = Some(Arc::from("UTC"));
        let fields: Vec<Field> = COLUMNS
            .iter()
            .map(|&name| match name {
                "eventTime" => Field::new(
                    name,
                    DataType::Timestamp(TimeUnit::Nanosecond, utc.clone()),
                    true,
                ),
                "receivedAt" => Field::new(
                    name,
                    DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
                    false,
                ),
                "index" => Field::new(name, DataType::UInt64, false),
                "account" | "event" => Field::new(name, DataType::Utf8, false),
                _ => Field::new(name, DataType::Utf8, true),
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Rows of a Parquet export gathered into Arrow column builders: [`crate::ParquetRows`].
    pub(crate) struct Rows {
        schema: SchemaRef,
        event_time: TimestampNanosecondBuilder,
        received_at: TimestampMicrosecondBuilder,
        index: UInt64Builder,
        /// account, id, action, outcome, severity, initiatorId, initiatorName, targetId,
        /// targetName, targetTypeURI, correlationId, message, event.
        text: Vec<StringBuilder>,
        rows: usize,
    }

    impl Rows {
        pub(crate) fn new() -> Self {
            Self {
                schema: schema(),
                event_time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
                received_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
                index: UInt64Builder::new(),
                text: (0..13).map(|_| StringBuilder::new()).collect(),
                rows: 0,
            }
        }

        pub(crate) fn len(&self) -> usize {
            self.rows
        }

        pub(crate) fn push(&mut self, f: &Fields<'_>) {
            self.event_time.append_option(f.event_time_nanos);
            self.received_at.append_value(f.received_at_micros);
            self.index.append_value(f.index);
            let values: [Option<&str>; 13] = [
                Some(f.account),
                f.id.as_deref(),
                f.action.as_deref(),
                f.outcome.as_deref(),
                f.severity.as_deref(),
                f.initiator_id.as_deref(),
                f.initiator_name.as_deref(),
                f.target_id.as_deref(),
                f.target_name.as_deref(),
                f.target_type_uri.as_deref(),
                f.correlation_id.as_deref(),
                f.message.as_deref(),
                Some(f.event),
            ];
            for (b, v) in self.text.iter_mut().zip(values) {
                b.append_option(v);
            }
            self.rows += 1;
        }

        /// The rows gathered so far as one batch (`None` if there are none); the builders
        /// start again empty.
        pub(crate) fn take(&mut self) -> Result<Option<RecordBatch>, ExportError> {
            if self.rows == 0 {
                return Ok(None);
            }
            let mut text = self
                .text
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef);
            let mut next = || text.next().expect("13 text columns");
            let account = next();
            let rest: Vec<ArrayRef> = (0..12).map(|_| next()).collect();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(self.event_time.finish()),
                Arc::new(self.received_at.finish()),
                account,
                Arc::new(self.index.finish()),
            ];
            columns.extend(rest);
            let batch = RecordBatch::try_new(self.schema.clone(), columns)
                .map_err(|e| ExportError::Format(format!("arrow: {e}")))?;
            self.rows = 0;
            Ok(Some(batch))
        }
    }

    pub(super) struct ParquetOut<W: Write + Send> {
        writer: ArrowWriter<W>,
        rows: Rows,
    }

    fn parquet_error(e: parquet::errors::ParquetError) -> ExportError {
        match e {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<std::io::Error>() {
                    Ok(io) => ExportError::Io(*io),
                    Err(other) => ExportError::Format(format!("parquet: {other}")),
                }
            }
            other => ExportError::Format(format!("parquet: {other}")),
        }
    }

    impl<W: Write + Send> ParquetOut<W> {
        pub(super) fn new(out: W) -> Result<Self, ExportError> {
            // Memory is bounded by the row group buffered before it is written: flushed at
            // PARQUET_ROW_GROUP_BYTES, pages of 256 KiB, and no dictionary for the columns whose
            // values are all different (the whole event, its message, its id).
            let unique = ["event", "message", "id", "correlationId"];
            let mut props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1")))
                .set_data_page_size_limit(256 * 1024)
                .set_dictionary_page_size_limit(256 * 1024)
                .set_max_row_group_row_count(Some(64 * 1024));
            for column in unique {
                props = props.set_column_dictionary_enabled(column.into(), false);
            }
            // Minimum and maximum of the whole event's JSON text prune nothing; comparing every
            // value against them costs.
            props = props.set_column_statistics_enabled("event".into(), EnabledStatistics::None);
            let props = props
                .set_created_by(concat!("trailkeep ", env!("CARGO_PKG_VERSION")).to_string())
                .build();
            let writer = ArrowWriter::try_new(out, schema(), Some(props)).map_err(parquet_error)?;
            Ok(Self {
                writer,
                rows: Rows::new(),
            })
        }

        pub(super) fn write(&mut self, f: &Fields<'_>) -> Result<(), ExportError> {
            self.rows.push(f);
            if self.rows.len() >= BATCH_ROWS {
                self.flush_batch()?;
            }
            Ok(())
        }

        fn flush_batch(&mut self) -> Result<(), ExportError> {
            match self.rows.take()? {
                Some(batch) => self.write_batch(&batch),
                None => Ok(()),
            }
        }

        /// Writes a batch of rows gathered elsewhere (after those pushed here, which are
        /// written first).
        pub(super) fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
            if let Some(pending) = self.rows.take()? {
                self.writer.write(&pending).map_err(parquet_error)?;
            }
            self.writer.write(batch).map_err(parquet_error)?;
            if self.writer.in_progress_size() >= PARQUET_ROW_GROUP_BYTES {
                self.writer.flush().map_err(parquet_error)?;
            }
            Ok(())
        }

        pub(super) fn finish(mut self) -> Result<W, ExportError> {
            self.flush_batch()?;
            self.writer.into_inner().map_err(parquet_error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSV is byte for byte what the `csv` crate writes with CRLF terminators.
    #[test]
    fn csv_bytes_are_the_csv_crates() {
        let records: Vec<Vec<&str>> = vec![
            COLUMNS.to_vec(),
            vec!["plain", "", "with space", "trailing ", " leading"],
            vec![
                "a,b",
                "say \"hi\"",
                "\"",
                "\"\"",
                "line\nbreak",
                "cr\rret",
                "crlf\r\n",
            ],
            vec!["", "", ""],
            vec![
                "größe ✓",
                "tab\there",
                "semi;colon",
                "'single'",
                "#hash",
                "\\back",
            ],
            vec![r#"{"a":"b","c":[1,2,{"d":"e\"f"}]}"#, "x"],
        ];
        let mut ours = CsvOut::new(Vec::new());
        let mut theirs = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .flexible(true)
            .from_writer(Vec::new());
        for r in &records {
            let fields: Vec<&[u8]> = r.iter().map(|f| f.as_bytes()).collect();
            ours.record(&fields).unwrap();
            theirs.write_record(r).unwrap();
        }
        let ours = ours.finish().unwrap();
        let theirs = theirs.into_inner().unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }

    /// Quotes at every offset of the eight-byte words, in runs and alone, and bytes that
    /// look like quotes to careless bit tricks, are quoted as the `csv` crate quotes them.
    #[test]
    fn csv_quoting_agrees_at_every_offset() {
        let alphabet = [b'a', b'"', 0xa2, 0x21, 0x23, b',', 0x00, b'\n'];
        for len in 1..40usize {
            for seed in 0..64usize {
                let field: Vec<u8> = (0..len)
                    .map(|i| alphabet[(i * 7 + seed * 13 + (i * seed) % 5) % alphabet.len()])
                    .collect();
                let field = String::from_utf8_lossy(&field).into_owned();
                let mut ours = CsvOut::new(Vec::new());
                ours.record(&[field.as_bytes()]).unwrap();
                let mut theirs = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(Vec::new());
                theirs.write_record([&field]).unwrap();
                assert_eq!(
                    ours.finish().unwrap(),
                    theirs.into_inner().unwrap(),
                    "{field:?}"
                );
            }
        }
    }

    /// Records past the buffer are written out as they fill it, in order.
    #[test]
    fn csv_over_many_buffers_is_written_in_order() {
        let long = "\"x\",".repeat(5_000);
        let mut w = CsvOut::new(Vec::new());
        let mut expected = Vec::new();
        for i in 0..100 {
            let n = i.to_string();
            w.record(&[n.as_bytes(), long.as_bytes()]).unwrap();
            expected.extend_from_slice(n.as_bytes());
            expected.extend_from_slice(b",\"");
            expected.extend_from_slice(long.replace('"', "\"\"").as_bytes());
            expected.extend_from_slice(b"\"\r\n");
        }
        assert_eq!(w.finish().unwrap(), expected);
    }
}
