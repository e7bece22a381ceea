//! Reading back the Parquet files [`crate::TabularWriter`] writes: the columns a restore needs
//! (`account`, `index`, `receivedAt`, `event`), checked for type, with a row limit.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampMicrosecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::ExportError;

/// One row of a Trailkeep Parquet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetRow {
    pub account: String,
    pub index: u64,
    /// `receivedAt` in µs since the Unix epoch.
    pub received_at_micros: i64,
    /// The canonical event text, as stored.
    pub event: String,
}

fn bad(reason: impl Into<String>) -> ExportError {
    ExportError::Format(format!("parquet: {}", reason.into()))
}

/// The rows of the Parquet file `bytes`, at most `max_rows` of them (more is an error).
pub fn read_parquet(bytes: Vec<u8>, max_rows: usize) -> Result<Vec<ParquetRow>, ExportError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .map_err(|e| bad(e.to_string()))?;
    let total = builder.metadata().file_metadata().num_rows();
    if usize::try_from(total).map_or(true, |n| n > max_rows) {
        return Err(bad(format!("{total} rows; at most {max_rows} are read")));
    }
    let reader = builder.build().map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::with_capacity(total as usize);
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        read_batch(&batch, &mut rows)?;
    }
    Ok(rows)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>, ExportError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| bad(format!("no column {name:?}")))
}

fn read_batch(batch: &RecordBatch, rows: &mut Vec<ParquetRow>) -> Result<(), ExportError> {
    let account = column(batch, "account")?
        .as_string_opt::<i32>()
        .ok_or_else(|| bad("account is not text"))?;
    let index = column(batch, "index")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| bad("index is not an unsigned integer"))?;
    let received = column(batch, "receivedAt")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| bad("receivedAt is not a µs timestamp"))?;
    let event = column(batch, "event")?
        .as_string_opt::<i32>()
        .ok_or_else(|| bad("event is not text"))?;
    for i in 0..batch.num_rows() {
        if account.is_null(i) || index.is_null(i) || received.is_null(i) || event.is_null(i) {
            return Err(bad(format!(
                "row {} has a null required column",
                rows.len()
            )));
        }
        rows.push(ParquetRow {
            account: account.value(i).to_string(),
            index: index.value(i),
            received_at_micros: received.value(i),
            event: event.value(i).to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExportItem, Format, TabularWriter};

    #[test]
    fn what_the_writer_writes_reads_back() {
        let mut w = TabularWriter::new(Format::Parquet, Vec::new()).unwrap();
        let events = [
            r#"{"action":"a.b.c","id":"1"}"#,
            r#"{"action":"a.b.d","id":"2"}"#,
        ];
        for (i, e) in events.iter().enumerate() {
            w.write(&ExportItem {
                account: "acme",
                index: 5 + i as u64,
                received_at_unix_nanos: 1_700_000_000_123_456_789,
                bytes: e.as_bytes(),
            })
            .unwrap();
        }
        let bytes = w.finish().unwrap();
        let rows = read_parquet(bytes.clone(), 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].index, 6);
        assert_eq!(rows[1].event, events[1]);
        assert_eq!(rows[0].received_at_micros, 1_700_000_000_123_456);
        assert!(read_parquet(bytes, 1).is_err(), "the row limit holds");
        assert!(read_parquet(b"not parquet".to_vec(), 10).is_err());
    }

    /// Rows gathered apart ([`crate::ParquetRows`], as an export gathers them on its reading
    /// thread) and rows written one by one make the same file content, in order.
    #[test]
    fn rows_gathered_apart_read_back_as_rows_written_one_by_one() {
        let items: Vec<String> = (0..1_000)
            .map(|i| {
                format!(
                    r#"{{"action":"a.b.{}","eventTime":"2026-11-15T08:37:{:02}.5+00:00","id":"{i}","message":"m \"{i}\"","target":{{"id":"t{}","name":"n"}}}}"#,
                    i % 7,
                    i % 60,
                    i % 13
                )
            })
            .collect();
        let item = |i: usize| ExportItem {
            account: if i.is_multiple_of(2) {
                "acme"
            } else {
                "globex"
            },
            index: i as u64,
            received_at_unix_nanos: 1_700_000_000_000_000_000 + i as i64 * 1_000,
            bytes: items[i].as_bytes(),
        };
        let mut one_by_one = TabularWriter::new(Format::Parquet, Vec::new()).unwrap();
        for i in 0..items.len() {
            one_by_one.write(&item(i)).unwrap();
        }
        let mut apart = TabularWriter::new(Format::Parquet, Vec::new()).unwrap();
        let mut rows = crate::ParquetRows::new();
        for i in 0..items.len() {
            // Some rows through the writer itself, the rest in batches of uneven sizes.
            if i % 100 < 3 {
                apart.write(&item(i)).unwrap();
                continue;
            }
            rows.push(&item(i)).unwrap();
            if rows.len() == 97 {
                apart.write_rows(rows.take().unwrap()).unwrap();
            }
        }
        apart.write_rows(rows.take().unwrap()).unwrap();
        assert_eq!(apart.rows(), items.len() as u64);
        let a = read_parquet(one_by_one.finish().unwrap(), 2_000).unwrap();
        let b = read_parquet(apart.finish().unwrap(), 2_000).unwrap();
        assert_eq!(a.len(), items.len());
        assert_eq!(a, b);
        // A CSV writer takes no Parquet rows.
        let mut csv = TabularWriter::new(Format::Csv, Vec::new()).unwrap();
        assert!(
            csv.write_rows(crate::ParquetRows::new().take().unwrap())
                .is_err()
        );
    }
}
