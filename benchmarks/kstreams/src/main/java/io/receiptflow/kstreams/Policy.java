package io.receiptflow.kstreams;

import java.io.IOException;
import java.nio.file.Path;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.tomlj.Toml;
import org.tomlj.TomlArray;
import org.tomlj.TomlParseResult;
import org.tomlj.TomlTable;

/**
 * The granularity policy (receiptflow.policy): the level of detail a chain may keep, by the
 * receipt's local date. Read from the same TOML file the router loads.
 */
final class Policy {
    static final String UNKNOWN_CHAIN_VERSION = "unknown-chain-default";

    enum Level {
        ITEM, PRODUCT_GROUP, RECEIPT; // finest first: a larger ordinal is coarser

        Level coarsest(Level other) {
            return ordinal() >= other.ordinal() ? this : other;
        }

        static Level of(String name, String where) {
            return switch (name) {
                case "item" -> ITEM;
                case "product_group" -> PRODUCT_GROUP;
                case "receipt" -> RECEIPT;
                default -> throw new IllegalArgumentException(where + ": unknown level '" + name + "'");
            };
        }
    }

    record Decision(String versionId, Level level) {}

    private record Version(String id, LocalDate from, Level level) {}

    private final Map<String, List<Version>> chains = new HashMap<>();
    private final Level defaultLevel;

    Policy(Path file) throws IOException {
        TomlParseResult doc = Toml.parse(file);
        if (doc.hasErrors()) {
            throw new IOException("cannot load policy " + file + ": " + doc.errors().get(0));
        }
        defaultLevel = Level.of(doc.getString("default_level", () -> "receipt"), "default_level");
        TomlTable table = doc.getTableOrEmpty("chains");
        for (String chain : table.keySet()) {
            TomlArray raw = table.getTable(List.of(chain)).getArrayOrEmpty("versions");
            List<Version> versions = new ArrayList<>();
            for (int i = 0; i < raw.size(); i++) {
                TomlTable v = raw.getTable(i);
                versions.add(new Version(v.getString("id"), v.getLocalDate("from"),
                        Level.of(v.getString("level"), "chains." + chain + ".versions[" + i + "]")));
            }
            versions.sort(Comparator.comparing(Version::from));
            chains.put(chain, versions);
        }
    }

    /** The version in force at the receipt's local date (the date printed on the receipt). */
    Decision versionAt(String chain, LocalDate day) {
        List<Version> versions = chains.get(chain);
        if (versions == null) {
            return new Decision(UNKNOWN_CHAIN_VERSION, defaultLevel);
        }
        Version chosen = null;
        for (Version v : versions) {
            if (v.from.isAfter(day)) {
                break;
            }
            chosen = v;
        }
        if (chosen == null) {
            // Before the first recorded version nothing was agreed: keep the least.
            return new Decision(chain.toLowerCase(Locale.ROOT) + "-before-first-version", Level.RECEIPT);
        }
        return new Decision(chosen.id, chosen.level);
    }
}
