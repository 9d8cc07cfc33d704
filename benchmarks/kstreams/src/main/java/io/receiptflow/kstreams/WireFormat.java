package io.receiptflow.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;

/**
 * The project's Avro records in the Confluent wire format: magic byte 0, a 4-byte big-endian schema
 * id, the Avro binary body.
 *
 * <p>Schema ids and files come from the repo's schemas/ids.json (no schema registry), as the
 * router's codec reads them. Like the router, a reader decodes with the newest version of the
 * writer's subject as reader schema (v1 checkouts read as v2 sales), and writers write the newest
 * version of their subject.
 */
final class WireFormat {
    private static final byte MAGIC = 0;
    private static final int HEADER = 5;

    private record Version(int id, String subject, int version, Schema schema) {}

    private final Map<Integer, Version> byId = new HashMap<>();
    private final Map<String, Version> latest = new HashMap<>();
    // Per writer schema id: the resolving reader. Not thread-safe; one WireFormat per stream thread.
    private final Map<Integer, GenericDatumReader<GenericRecord>> readers = new HashMap<>();
    private final Map<String, GenericDatumWriter<GenericRecord>> writers = new HashMap<>();
    private BinaryDecoder decoder;
    private BinaryEncoder encoder;

    WireFormat(Path schemasDir) throws IOException {
        JsonNode index = new ObjectMapper().readTree(schemasDir.resolve("ids.json").toFile());
        for (JsonNode entry : index.get("schemas")) {
            // A fresh parser per file: the files define the same named types (each version of a subject).
            Schema schema = new Schema.Parser().parse(Files.readString(schemasDir.resolve(entry.get("file").asText())));
            Version v = new Version(entry.get("id").asInt(), entry.get("subject").asText(), entry.get("version").asInt(), schema);
            byId.put(v.id, v);
            latest.merge(v.subject, v, (a, b) -> a.version >= b.version ? a : b);
        }
    }

    /** The schema records of {@code subject} are written with (its newest version). */
    Schema schema(String subject) {
        return latest.get(subject).schema;
    }

    /** Decode a framed record of {@code subject}; the reasons are the router's codec's. */
    GenericRecord decode(byte[] data, String subject) throws Rejected {
        if (data == null) {
            throw new Rejected("undecodable", "record has no value (tombstone)");
        }
        if (data.length < HEADER || data[0] != MAGIC) {
            throw new Rejected("undecodable", "not Confluent-framed Avro (bad magic byte or too short)");
        }
        int id = ByteBuffer.wrap(data, 1, 4).getInt();
        Version writer = byId.get(id);
        if (writer == null) {
            throw new Rejected("unknown_schema_id", "no schema with id " + id);
        }
        if (!writer.subject.equals(subject)) {
            throw new Rejected("wrong_subject", "expected a '" + subject + "' record, got '" + writer.subject + "'");
        }
        GenericDatumReader<GenericRecord> reader = readers.computeIfAbsent(
                id, k -> new GenericDatumReader<>(writer.schema, latest.get(writer.subject).schema));
        decoder = DecoderFactory.get().binaryDecoder(data, HEADER, data.length - HEADER, decoder);
        GenericRecord value;
        try {
            value = reader.read(null, decoder);
        } catch (IOException | RuntimeException e) {
            // Truncated or garbage bodies fail in many ways (EOF, bad union index, negative length).
            throw new Rejected("undecodable", "cannot decode '" + subject + "' body: " + e);
        }
        try {
            if (!decoder.isEnd()) {
                throw new Rejected("undecodable", "trailing bytes after the record");
            }
        } catch (IOException e) {
            throw new Rejected("undecodable", "cannot decode '" + subject + "' body: " + e);
        }
        return value;
    }

    /** Encode a record of {@code subject} with its newest schema, framed with that schema's id. */
    byte[] encode(String subject, GenericRecord record) {
        Version v = latest.get(subject);
        ByteArrayOutputStream out = new ByteArrayOutputStream(256);
        out.write(MAGIC);
        out.write(v.id >>> 24);
        out.write(v.id >>> 16);
        out.write(v.id >>> 8);
        out.write(v.id);
        encoder = EncoderFactory.get().binaryEncoder(out, encoder);
        try {
            writers.computeIfAbsent(subject, k -> new GenericDatumWriter<>(v.schema)).write(record, encoder);
            encoder.flush();
        } catch (IOException e) {
            throw new IllegalStateException("cannot encode a '" + subject + "' record: " + e.getMessage(), e);
        }
        return out.toByteArray();
    }
}
