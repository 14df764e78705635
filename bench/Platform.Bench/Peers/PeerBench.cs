// The peer comparisons of `bench engine`: the engine beside llama.cpp (--peer-llamacpp DIR) and
// llama2.c (--peer-llama2c PATH) on the same random weights, batch-1 greedy decode, in one run.
//
// llama.cpp, for each weight width: the engine case and the GGUF file it is set beside are
//   fp32 checkpoint (weights float32)          vs f32 GGUF
//   bf16 checkpoint, --weight-dtype auto       vs f16 GGUF
//   f16 checkpoint, --weight-dtype auto        vs f16 GGUF
//   fp32 checkpoint, --quantization int8       vs q8_0 GGUF
// Every GGUF is written from the fp32 checkpoint; the f16 checkpoint holds the same f16-rounded values
// as the f16 GGUF, the bf16 checkpoint other (bf16-rounded) ones, so its greedy agreement is not a
// check. Each engine case is loaded once, then rounds alternate engine and llama.cpp, so a change of
// machine load hits both alike; each side keeps its best round. At f32 the greedy ids must agree: a
// difference is reported loudly (the two then do not run the same model).
// Start: process start to exit after one generated token, `platform generate` on the bf16 checkpoint
// vs the driver on the f16 GGUF, after one unmeasured run of each (warm page cache).
//
// --peer-cases picks which of the llama.cpp cases (f32, bf16, f16, q8_0, start) run; all by default. The
// `context` case is EngineBench's: llama.cpp beside each --context/--batch cell.
// Quantization's own cost: the int8 row also reports how far the engine's int8 greedy ids follow its
// own fp32 ids and how far llama.cpp's q8_0 ids follow its own f32 ids (same prompt, same run;
// QuantizedAgreement), and, as the check, teacher-forced top-1 agreement: each side's f32 and
// quantized models score the same 256 random tokens in one batch, and the positions whose top id
// the quantization kept are counted (ForcedAgreement; the engine's int8 should keep at least as many
// as llama.cpp's q8_0).
//
// llama2.c: the fp32 checkpoint exported to run.c's format; engine fp32 vs run.c, rounds alternating.
using System.Globalization;
using Platform.Bench.Models;
using Platform.Core.Safetensors;
using Platform.Engine;
using Platform.Engine.Model;
using Spectre.Console;

namespace Platform.Bench.Peers;

internal sealed record PeerWidthRow(string Width, string EngineCase, string PeerFile, double? EngineTokensPerSecond,
    double? PeerTokensPerSecond, double? EngineOverPeer, int? AgreeingIds, int Tokens, string? Note,
    QuantizedAgreement? OwnF32Agreement = null, ForcedAgreement? OwnF32Forced = null);

/// <summary>
/// Teacher-forced top-1 agreement of each side's quantized model with its own f32 model, over the positions of one token
/// sequence: the positions where the quantized logits' top id is the f32 logits' top id. Unlike the free-running prefix
/// (QuantizedAgreement), where the first near-tie that flips ends the count (on a random-weight model, whose logits are
/// nearly flat, that is a coin toss: 4 of 32 or 30 of 32 for the same quantization), every position counts once.
/// </summary>
internal sealed record ForcedAgreement(int Engine, int Peer, int Positions)
{
    public static ForcedAgreement Of(IReadOnlyList<int> engineF32, IReadOnlyList<int> engineQuantized,
        IReadOnlyList<int> peerF32, IReadOnlyList<int> peerQuantized)
    {
        int positions = engineF32.Count;
        if (engineQuantized.Count != positions || peerF32.Count != positions || peerQuantized.Count != positions)
            throw new ArgumentException($"every side scores the same positions: got {engineF32.Count}, {engineQuantized.Count}, {peerF32.Count} and {peerQuantized.Count}");
        static int Same(IReadOnlyList<int> a, IReadOnlyList<int> b) => Enumerable.Range(0, a.Count).Count(i => a[i] == b[i]);
        return new ForcedAgreement(Same(engineF32, engineQuantized), Same(peerF32, peerQuantized), positions);
    }

    /// <summary>True when the engine's int8 keeps its fp32 top id at least as often as llama.cpp's q8_0 keeps its f32 one.</summary>
    public bool EngineAtLeastAsClose => Engine >= Peer;

    public override string ToString() =>
        $"teacher-forced top-1 = own f32: engine int8 {Engine} of {Positions}, llama.cpp q8_0 {Peer} of {Positions}"
        + (EngineAtLeastAsClose ? "" : " (ENGINE INT8 FURTHER FROM ITS F32)");
}

/// <summary>
/// A quantized case's greedy ids against each side's own f32 ids: the leading ids the engine's int8 run shares with the
/// engine's fp32 run, and llama.cpp's q8_0 run with llama.cpp's f32 run.
/// </summary>
internal sealed record QuantizedAgreement(int EngineIds, int PeerIds, int Tokens)
{
    public static QuantizedAgreement Of(IReadOnlyList<int> engineF32, IReadOnlyList<int> engineQuantized,
        IReadOnlyList<int> peerF32, IReadOnlyList<int> peerQuantized, int tokens) =>
        new(EngineDecode.AgreeingPrefix(engineF32, engineQuantized), EngineDecode.AgreeingPrefix(peerF32, peerQuantized), tokens);

    /// <summary>True when the engine's quantized run follows its fp32 run at least as far as llama.cpp's does its f32 run.</summary>
    public bool EngineAtLeastAsClose => EngineIds >= PeerIds;

    public override string ToString() =>
        $"engine int8 = engine fp32 for {EngineIds} of {Tokens}, llama.cpp q8_0 = llama.cpp f32 for {PeerIds} of {Tokens}"
        + (EngineAtLeastAsClose ? "" : " (ENGINE INT8 DRIFTS SOONER)");
}

internal sealed record PeerStartRow(double EngineSeconds, double PeerSeconds, double EngineOverPeer);

internal sealed record Llama2cRow(double EngineTokensPerSecond, double PeerTokensPerSecond, double EngineOverPeer, int Steps);

internal sealed record PeerReport(string Preset, int Threads, int Rounds, IReadOnlyList<PeerWidthRow> LlamaCpp, PeerStartRow? Start, Llama2cRow? Llama2c);

internal sealed class PeerBench(string preset, int threads, int tokens, int rounds, IReadOnlyCollection<string>? cases = null, bool recache = false)
{
    /// <summary>
    /// The case that sets llama.cpp beside each --context/--batch cell of `bench engine` (EngineBench, not this class): its
    /// decode at the cell's context and batch, on the f32 GGUF of the cell's preset.
    /// </summary>
    public const string ContextCase = "context";

    /// <summary>The llama.cpp cases --peer-cases may name (none named: all run).</summary>
    public static readonly IReadOnlyList<string> CaseNames = ["f32", "bf16", "f16", "q8_0", "start", ContextCase];

    /// <summary>True when <paramref name="cases"/> (as given to --peer-cases) asks for any of this class's rows.</summary>
    public static bool AnyRows(IReadOnlyCollection<string> cases) =>
        cases.Count == 0 || cases.Any(c => !c.Equals(ContextCase, StringComparison.OrdinalIgnoreCase));

    /// <summary>True when <paramref name="cases"/> (as given to --peer-cases; none named: all) selects the case <paramref name="name"/>.</summary>
    public static bool Selects(IReadOnlyCollection<string>? cases, string name) =>
        cases is null || cases.Count == 0 || cases.Contains(name, StringComparer.OrdinalIgnoreCase);

    private bool Runs(string name) => Selects(cases, name);

    private const int PromptTokens = 16;
    internal static readonly string CacheDir = Path.Combine(BenchModels.CacheRoot, "peers");

    public async Task<PeerReport> RunAsync(string? llamaCppDir, string? llama2cBinary)
    {
        var rows = new List<PeerWidthRow>();
        PeerStartRow? start = null;
        Llama2cRow? llama2c = null;
        string f32Dir = BenchModels.Ensure(preset);
        var prompt = BenchModels.RandomPrompt(f32Dir, PromptTokens, seed: 17);
        if (llamaCppDir is not null)
        {
            var peer = await LlamaCppPeer.PrepareAsync(llamaCppDir, CacheDir);
            AnsiConsole.MarkupLine($"[grey]llama.cpp driver: {Markup.Escape(peer.DriverPath)}[/]");
            string Gguf(GgmlType type) => EnsureGguf(f32Dir, type);
            Comparison? f32 = null;
            if (Runs("f32"))
            {
                f32 = await CompareAsync(peer, prompt, "f32", "fp32 checkpoint, float32", f32Dir, Options("float32"), Gguf(GgmlType.F32), agreementChecked: true);
                rows.Add(f32.WidthRow);
            }
            if (Runs("bf16"))
            {
                string bf16Dir = BenchModels.Ensure(preset, SafetensorsDtype.BF16);
                rows.Add((await CompareAsync(peer, prompt, "f16", "bf16 checkpoint, --weight-dtype auto", bf16Dir, Options("auto"), Gguf(GgmlType.F16), agreementChecked: false)).WidthRow);
            }
            if (Runs("f16"))
            {
                string f16Dir = BenchModels.Ensure(preset, SafetensorsDtype.F16);
                rows.Add((await CompareAsync(peer, prompt, "f16", "f16 checkpoint, --weight-dtype auto", f16Dir, Options("auto"), Gguf(GgmlType.F16), agreementChecked: true)).WidthRow);
            }
            if (Runs("q8_0"))
            {
                var q8 = await CompareAsync(peer, prompt, "q8_0", "fp32 checkpoint, --quantization int8", f32Dir,
                    Options("auto") with { Quantization = Platform.Engine.Model.Quantization.Q8 }, Gguf(GgmlType.Q8_0), agreementChecked: false);
                // Against each side's own f32 ids: needs the f32 case in the same run.
                QuantizedAgreement? own = f32?.EngineIds is { } ef && f32.PeerIds is { } pf && q8.EngineIds is { } eq && q8.PeerIds is { } pq
                    ? QuantizedAgreement.Of(ef, eq, pf, pq, tokens) : null;
                if (own is not null)
                    AnsiConsole.MarkupLine($"  int8 against each side's own f32: {Markup.Escape(own.ToString())}");
                var forced = await ForcedAgreementAsync(peer, f32Dir, Gguf(GgmlType.F32), Gguf(GgmlType.Q8_0));
                AnsiConsole.MarkupLine($"  {Markup.Escape(forced.ToString())}");
                rows.Add(q8.WidthRow with { OwnF32Agreement = own, OwnF32Forced = forced });
            }
            if (Runs("start"))
                start = await MeasureStartAsync(peer, BenchModels.Ensure(preset, SafetensorsDtype.BF16), Gguf(GgmlType.F16), prompt);
        }
        if (llama2cBinary is not null)
            llama2c = await CompareLlama2cAsync(new Llama2cPeer(llama2cBinary), f32Dir, prompt);
        return new PeerReport(preset, threads, rounds, rows, start, llama2c);
    }

    /// <summary>Positions of the teacher-forced agreement check (one random token sequence, scored in one batch by each model).</summary>
    private const int ScoredTokens = 256;

    /// <summary>The int8 check: each side's quantized and f32 models score one random sequence (teacher forcing), see ForcedAgreement.</summary>
    private async Task<ForcedAgreement> ForcedAgreementAsync(LlamaCppPeer peer, string f32Dir, string f32Gguf, string q8Gguf)
    {
        AnsiConsole.MarkupLine($"[grey]int8 agreement: each side's f32 and quantized models score the same {ScoredTokens} random tokens…[/]");
        var sequence = BenchModels.RandomPrompt(f32Dir, ScoredTokens, seed: 29);
        var engineF32 = EngineDecode.TopIds(f32Dir, sequence, "float32", Platform.Engine.Model.Quantization.None);
        var engineQ8 = EngineDecode.TopIds(f32Dir, sequence, WeightDtype.Auto, Platform.Engine.Model.Quantization.Q8);
        var peerF32 = await peer.ScoreAsync(f32Gguf, sequence, threads);
        var peerQ8 = await peer.ScoreAsync(q8Gguf, sequence, threads);
        return ForcedAgreement.Of(engineF32, engineQ8, peerF32, peerQ8);
    }

    private EngineOptions Options(string weightDtype) => new()
    {
        Threads = threads,
        MaxRunningRequests = 4,
        NumKvBlocks = (PromptTokens + tokens + 64) / 16 * 2 + 8,
        DefaultSeed = 1,
        WeightDtype = weightDtype,
    };

    /// <summary>One width's row, plus the last round's greedy ids of each side (null when the engine refused the case).</summary>
    private sealed record Comparison(PeerWidthRow WidthRow, IReadOnlyList<int>? EngineIds, IReadOnlyList<int>? PeerIds);

    private async Task<Comparison> CompareAsync(LlamaCppPeer peer, IReadOnlyList<int> prompt, string width, string engineCase,
        string modelDir, EngineOptions options, string gguf, bool agreementChecked)
    {
        AnsiConsole.MarkupLine($"[grey]{Markup.Escape(engineCase)} vs {Markup.Escape(Path.GetFileName(gguf))}: loading…[/]");
        DescribePageCache(Path.Combine(modelDir, "model.safetensors"), gguf);
        LlmEngine engine;
        try
        {
            engine = LlmEngine.Load(modelDir, options);
        }
        catch (ArgumentException e)
        {
            return new Comparison(new PeerWidthRow(width, engineCase, Path.GetFileName(gguf), null, null, null, null, tokens, $"skipped: the engine rejected it ({e.Message})"), null, null);
        }
        using (engine)
        {
            double bestEngine = 0, bestPeer = 0;
            int agreeing = tokens;
            IReadOnlyList<int>? engineIds = null, peerIds = null;
            // One unmeasured generation first: this process's JIT tiers up the engine's loops during its first
            // tokens (the first case of a run was 5-10 % slower in its first rounds than the later cases), while
            // the peer starts a fresh, already compiled process each round.
            await EngineDecode.RunAsync(engine, prompt, tokens);
            for (int round = 0; round < rounds; round++)
            {
                var mine = await EngineDecode.RunAsync(engine, prompt, tokens);
                var theirs = await peer.GenerateAsync(gguf, prompt, tokens, threads);
                (engineIds, peerIds) = (mine.Ids, theirs.Ids);
                agreeing = Math.Min(agreeing, EngineDecode.AgreeingPrefix(mine.Ids, theirs.Ids));
                bestEngine = Math.Max(bestEngine, mine.DecodeTokensPerSecond);
                bestPeer = Math.Max(bestPeer, theirs.DecodeTokensPerSecond ?? 0);
                AnsiConsole.MarkupLine($"  round {round + 1}: engine {mine.DecodeTokensPerSecond:F2} tok/s, llama.cpp {theirs.DecodeTokensPerSecond:F2} tok/s, "
                    + $"greedy ids agree on {EngineDecode.AgreeingPrefix(mine.Ids, theirs.Ids)} of {tokens}");
            }
            string? note = agreementChecked ? (agreeing == tokens ? null : "GREEDY IDS DIFFER") : "agreement not a check: different weight values or arithmetic";
            if (agreementChecked && agreeing != tokens)
                AnsiConsole.MarkupLine($"[red]{Markup.Escape(engineCase)}: greedy ids differ from llama.cpp's after {agreeing} of {tokens}[/]");
            return new Comparison(new PeerWidthRow(width, engineCase, Path.GetFileName(gguf), bestEngine, bestPeer, bestEngine / bestPeer, agreeing, tokens, note),
                engineIds, peerIds);
        }
    }

    /// <summary>
    /// With --peer-recache, reads both files into the page cache afresh; then prints how much of each the cache holds in
    /// 2 MB folios (PageCacheFolios: decode from a mapped file depends on it on these VMs, so unlike shares bias a ratio).
    /// </summary>
    private void DescribePageCache(string checkpoint, string peerFile)
    {
        if (!File.Exists(checkpoint)) return; // a sharded checkpoint: not described
        if (recache)
        {
            PageCacheFolios.Recache(checkpoint);
            PageCacheFolios.Recache(peerFile);
        }
        static string Share(string path) => PageCacheFolios.HugeShare(path) is { } share ? share.ToString("P0", CultureInfo.InvariantCulture) : "unknown";
        AnsiConsole.MarkupLine($"[grey]  page cache in 2 MB folios{(recache ? " (re-read)" : "")}: {Markup.Escape(Path.GetFileName(Path.GetDirectoryName(checkpoint)!))} {Share(checkpoint)}, {Markup.Escape(Path.GetFileName(peerFile))} {Share(peerFile)}[/]");
    }

    private async Task<PeerStartRow> MeasureStartAsync(LlamaCppPeer peer, string bf16Dir, string f16Gguf, IReadOnlyList<int> prompt)
    {
        DescribePageCache(Path.Combine(bf16Dir, "model.safetensors"), f16Gguf);
        string cli = Path.Combine(AppContext.BaseDirectory, "platform.dll");
        Task<PeerRun> Engine() => PeerProcess.RunAsync("dotnet",
            [cli, "generate", "--model", bf16Dir, "--prompt-ids", string.Join(',', prompt), "--max-tokens", "1", "--json"]);
        Task<LlamaCppResult> Peer() => peer.GenerateAsync(f16Gguf, prompt, 1, threads);
        AnsiConsole.MarkupLine("[grey]start: one unmeasured run of each (warm page cache)…[/]");
        (await Engine()).EnsureSuccess("platform generate");
        await Peer();
        double bestEngine = double.MaxValue, bestPeer = double.MaxValue;
        for (int round = 0; round < rounds; round++)
        {
            var mine = (await Engine()).EnsureSuccess("platform generate");
            var theirs = await Peer();
            bestEngine = Math.Min(bestEngine, mine.Elapsed.TotalSeconds);
            bestPeer = Math.Min(bestPeer, theirs.ProcessTime.TotalSeconds);
            AnsiConsole.MarkupLine($"  start round {round + 1}: platform generate {mine.Elapsed.TotalSeconds:F2} s, llama.cpp driver {theirs.ProcessTime.TotalSeconds:F2} s");
        }
        return new PeerStartRow(bestEngine, bestPeer, bestEngine / bestPeer);
    }

    private async Task<Llama2cRow> CompareLlama2cAsync(Llama2cPeer peer, string f32Dir, IReadOnlyList<int> prompt)
    {
        string checkpoint = Path.Combine(CacheDir, $"{Path.GetFileName(f32Dir)}.llama2c.bin");
        string tokenizer = Path.Combine(CacheDir, $"{Path.GetFileName(f32Dir)}.llama2c-tokenizer.bin");
        Directory.CreateDirectory(CacheDir);
        if (!File.Exists(checkpoint))
        {
            AnsiConsole.MarkupLine($"[grey]exporting {Markup.Escape(f32Dir)} to llama2.c's format…[/]");
            Llama2cExport.Write(f32Dir, checkpoint, seqLen: 1024);
        }
        if (!File.Exists(tokenizer)) Llama2cExport.WriteTokenizer(f32Dir, tokenizer);
        // run.c takes text, not ids, and encodes it with its own merge loop: a fixed English sentence.
        // The ids differ from the engine's prompt, which does not change the cost of a step.
        const string text = "The river town wakes before the sun, and bakers pull the first bread from their ovens.";
        int llama2cTokens = PromptTokens + tokens;
        AnsiConsole.MarkupLine("[grey]loading the engine (fp32) for the llama2.c comparison…[/]");
        DescribePageCache(Path.Combine(f32Dir, "model.safetensors"), checkpoint);
        using var engine = LlmEngine.Load(f32Dir, Options("float32"));
        await EngineDecode.RunAsync(engine, prompt, tokens); // unmeasured, as in CompareAsync
        double bestEngine = 0, bestPeer = 0;
        for (int round = 0; round < rounds; round++)
        {
            var mine = await EngineDecode.RunAsync(engine, prompt, tokens);
            double theirs = await peer.DecodeTokensPerSecondAsync(checkpoint, tokenizer, text, llama2cTokens, threads);
            bestEngine = Math.Max(bestEngine, mine.DecodeTokensPerSecond);
            bestPeer = Math.Max(bestPeer, theirs);
            AnsiConsole.MarkupLine($"  llama2.c round {round + 1}: engine {mine.DecodeTokensPerSecond:F2} tok/s, llama2.c {theirs:F2} tok/s");
        }
        return new Llama2cRow(bestEngine, bestPeer, bestEngine / bestPeer, llama2cTokens);
    }

    internal static string EnsureGguf(string modelDir, GgmlType type)
    {
        Directory.CreateDirectory(CacheDir);
        string path = Path.Combine(CacheDir, $"{Path.GetFileName(modelDir)}.{type.ToString().ToLowerInvariant()}.gguf");
        if (File.Exists(path)) return path;
        AnsiConsole.MarkupLine($"[grey]writing {Markup.Escape(path)}…[/]");
        GgufExport.Write(modelDir, path, type);
        return path;
    }

    public static void Print(PeerReport report)
    {
        if (report.LlamaCpp.Count > 0)
        {
            var table = new Table().AddColumns("width", "engine", "llama.cpp file", "engine tok/s", "llama.cpp tok/s", "engine / llama.cpp", "greedy ids agree",
                "leading ids = own f32: engine / llama.cpp", "teacher-forced top-1 = own f32: engine / llama.cpp", "note");
            foreach (var r in report.LlamaCpp)
                table.AddRow(r.Width, Markup.Escape(r.EngineCase), Markup.Escape(r.PeerFile), Format(r.EngineTokensPerSecond), Format(r.PeerTokensPerSecond),
                    r.EngineOverPeer is { } x ? x.ToString("F2", CultureInfo.InvariantCulture) + "×" : "-",
                    r.AgreeingIds is { } a ? $"{a} of {r.Tokens}" : "-",
                    r.OwnF32Agreement is { } o ? $"{o.EngineIds} / {o.PeerIds} of {o.Tokens}" : "-",
                    r.OwnF32Forced is { } f ? $"{f.Engine} / {f.Peer} of {f.Positions}{(f.EngineAtLeastAsClose ? "" : " (engine further)")}" : "-",
                    Markup.Escape(r.Note ?? ""));
            AnsiConsole.Write(table);
        }
        if (report.Start is { } s)
            AnsiConsole.MarkupLine($"start to first token (process start to exit after 1 token, warm cache): platform generate {s.EngineSeconds:F2} s, llama.cpp {s.PeerSeconds:F2} s = {s.EngineOverPeer:F1}×");
        if (report.Llama2c is { } l)
            AnsiConsole.MarkupLine($"llama2.c, fp32 batch-1 decode: engine {l.EngineTokensPerSecond:F2} tok/s, llama2.c {l.PeerTokensPerSecond:F2} tok/s = {l.EngineOverPeer:F2}×");
        AnsiConsole.MarkupLine($"{report.Preset}, {report.Threads} threads, best of {report.Rounds} interleaved rounds");
    }

    private static string Format(double? v) => v is { } x ? x.ToString("F2", CultureInfo.InvariantCulture) : "-";
}
