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
    // Room for the worst case (every byte a quote), then one pass without branches on the
    // bytes: each byte is copied with a quote after it, which the next byte overwrites unless
    // the byte was a quote itself (JSON text has one every dozen bytes or so).
    let start = out.len();
    out.resize(start + 2 + field.len() * 2, 0);
    let dst = &mut out[start..];
    dst[0] = b'"';
    let mut n = 1;
    for &b in field {
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
    use parquet::file::properties::WriterProperties;

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

    pub(super) struct ParquetOut<W: Write + Send> {
        writer: ArrowWriter<W>,
        schema: SchemaRef,
        event_time: TimestampNanosecondBuilder,
        received_at: TimestampMicrosecondBuilder,
        index: UInt64Builder,
        /// account, id, action, outcome, severity, initiatorId, initiatorName, targetId,
        /// targetName, targetTypeURI, correlationId, message, event.
        text: Vec<StringBuilder>,
        rows: usize,
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
            let schema = schema();
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
            let props = props
                .set_created_by(concat!("trailkeep ", env!("CARGO_PKG_VERSION")).to_string())
                .build();
            let writer =
                ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(parquet_error)?;
            Ok(Self {
                writer,
                schema,
                event_time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
                received_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
                index: UInt64Builder::new(),
                text: (0..13).map(|_| StringBuilder::new()).collect(),
                rows: 0,
            })
        }

        pub(super) fn write(&mut self, f: &Fields<'_>) -> Result<(), ExportError> {
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
            if self.rows >= BATCH_ROWS {
                self.flush_batch()?;
            }
            Ok(())
        }

        fn flush_batch(&mut self) -> Result<(), ExportError> {
            if self.rows == 0 {
                return Ok(());
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
            self.writer.write(&batch).map_err(parquet_error)?;
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
