#pragma once
// The four plain-English domains of seeds/003, method 3: psychology (clinical findings, therapy, cognitive
// biases), history (events, treaties, archaeological evidence), medicine (symptoms, treatments, clinical
// trials) and business (revenue, market analysis, management strategies), generated from templates with
// randomized variables.
//
// A sample is two or three sentences of its domain's templates, drawn without repetition; in about two
// samples of five, one sentence of the shared templates (reports, conferences, debates about the domain's
// topics) joins them. Domains share everyday English by design: the shared templates, the shared fillers
// (cities, institutions, verbs of change and report, numbers) and fillers that two domains both use
// (patients and outpatients, markets and trade, studies and trials). What stays the domain's own is its
// subject matter. Numbers (years, percentages, counts, amounts) are drawn, not written in the templates.

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/check.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe::examples {

enum class EnglishDomain { psychology, history, medicine, business };

inline constexpr std::array<EnglishDomain, 4> english_domains{EnglishDomain::psychology, EnglishDomain::history,
                                                               EnglishDomain::medicine, EnglishDomain::business};

inline const char* domain_name(EnglishDomain domain) {
  switch (domain) {
    case EnglishDomain::psychology: return "psychology";
    case EnglishDomain::history: return "history";
    case EnglishDomain::medicine: return "medicine";
    case EnglishDomain::business: return "business";
  }
  fail("domain_name: unknown domain ", static_cast<int>(domain));
}

struct DomainSample {
  EnglishDomain domain = EnglishDomain::psychology;
  std::string text;
};

/// Samples per domain of each set; the validation samples are held out beside the two training sets (the
/// document does not say what it validated on).
struct DomainCorpusOptions {
  Index pretrain_per_domain = 300;
  Index moe_per_domain = 600;
  Index validation_per_domain = 60;
};

/// Each set holds its domains in order (all psychology samples, then history, ...); no text occurs twice in
/// the corpus, so the three sets are disjoint.
struct DomainCorpus {
  std::vector<DomainSample> pretrain;
  std::vector<DomainSample> moe;
  std::vector<DomainSample> validation;
};

namespace domain_text {

/// A template slot and the phrases it draws from.
struct Slot {
  std::string_view name;
  std::vector<std::string_view> phrases;
};

struct DomainTemplates {
  std::vector<std::string_view> sentences;
  std::vector<Slot> slots;
};

/// Slots every domain uses: the plain English the domains share.
inline const std::vector<Slot>& shared_slots() {
  static const std::vector<Slot> slots{
      {"city",
       {"London", "Boston", "Tokyo", "Berlin", "Cairo", "Chicago", "Madrid", "Sydney", "Toronto", "Mumbai", "Vienna",
        "Lisbon", "Nairobi", "Seoul", "Oslo", "Lima"}},
      {"institution",
       {"a national research council", "a leading university", "an independent institute", "a public agency",
        "a private foundation", "a government commission", "a team of independent reviewers",
        "a panel of international experts"}},
      {"rose", {"rose", "increased", "grew", "climbed", "improved", "recovered"}},
      {"fell", {"fell", "decreased", "declined", "dropped", "weakened", "shrank"}},
      {"adverb", {"sharply", "slightly", "steadily", "significantly", "modestly", "unexpectedly", "gradually"}},
      {"found", {"found", "showed", "suggested", "reported", "concluded", "confirmed", "argued"}},
      {"period",
       {"over the following years", "within a few months", "during the same period", "by the end of the year",
        "over the next decade", "in the months that followed"}},
      {"opinion",
       {"remain divided", "are cautiously optimistic", "disagree sharply", "remain sceptical",
        "are increasingly concerned", "are more hopeful than before"}},
      {"evidence",
       {"new evidence", "careful analysis", "a closer look at the records", "a series of detailed interviews",
        "a review of earlier studies", "a large survey"}},
  };
  return slots;
}

/// Sentences any domain may add, about its own {topic}.
inline const std::vector<std::string_view>& shared_sentences() {
  static const std::vector<std::string_view> sentences{
      "A report published in {year} by {institution} examined {topic}.",
      "The findings on {topic} were presented at a conference in {city}.",
      "Over the past decade, interest in {topic} has grown {adverb}.",
      "Critics argue that earlier work on {topic} relied on incomplete data.",
      "Several new books about {topic} appeared in {year}.",
      "Experts in {city} {opinion} about {topic}.",
      "According to {institution}, {evidence} has changed how people think about {topic}.",
      "A public lecture on {topic} in {city} drew {count} listeners.",
      "Students who want to understand {topic} often begin with the basic questions.",
      "The debate about {topic} is far from settled, and observers {opinion}.",
  };
  return sentences;
}

inline DomainTemplates psychology() {
  return {
      {
          // clinical findings
          "A study of {count} {participants} {found} that {measure} {rose} {adverb} after the intervention.",
          "Clinicians reported that {disorder} was more common among {participants} than expected.",
          "In a sample of {count} {participants}, symptoms of {disorder} predicted poorer {measure}.",
          "{psych_role} {found} that {emotion} and {measure} were closely linked in {participants}.",
          "The clinical findings showed that {percent} of {participants} met the criteria for {disorder}.",
          "Follow-up interviews {found} that {measure} {fell} {adverb} among {participants} with {disorder}.",
          "Screening of {participants} in {city} identified {disorder} in {percent} of cases.",
          "Patients with {disorder} described feelings of {emotion} that lasted for weeks.",
          // therapy
          "After {count} sessions of {therapy}, {participants} reported less {emotion}.",
          "{therapy} reduced symptoms of {disorder} by {percent} compared with a waiting list.",
          "{psych_role} often combine {therapy} with homework exercises between sessions.",
          "Many therapists now offer {therapy} online to {participants}.",
          "In group sessions, {participants} practiced {therapy} to cope with {emotion}.",
          "{therapy} helped {participants} recognise the thoughts that feed their {emotion}.",
          "The therapist used {therapy} to help the client manage {disorder}.",
          "Relapse rates after {therapy} {fell} {period}, the counselors noted.",
          // cognitive biases
          "{bias} leads people to misjudge risks in everyday decisions.",
          "In {psych_task}, {participants} showed strong signs of {bias}.",
          "{psych_role} demonstrated {bias} by asking {count} volunteers to complete {psych_task}.",
          "Because of {bias}, people tend to remember the evidence that supports their beliefs.",
          "The experiment {found} that {bias} grew stronger when {participants} felt {emotion}.",
          "Training in critical thinking reduced {bias} in {percent} of {participants}.",
          "{bias} can distort how {participants} judge their own abilities.",
          "Researchers measured {bias} with {psych_task} and a short questionnaire.",
      },
      {
          {"disorder",
           {"generalized anxiety disorder", "major depression", "social anxiety", "obsessive-compulsive disorder",
            "post-traumatic stress", "chronic insomnia", "panic disorder", "attention deficits", "burnout",
            "specific phobias", "bipolar disorder", "eating disorders"}},
          {"therapy",
           {"cognitive behavioral therapy", "exposure therapy", "mindfulness training", "interpersonal therapy",
            "group therapy", "psychodynamic therapy", "acceptance and commitment therapy", "family therapy",
            "dialectical behavior therapy", "behavioral activation"}},
          {"bias",
           {"confirmation bias", "the anchoring effect", "the availability heuristic", "hindsight bias",
            "the sunk cost fallacy", "loss aversion", "the halo effect", "overconfidence", "the framing effect",
            "the bystander effect", "negativity bias", "the Dunning-Kruger effect"}},
          {"participants",
           {"undergraduate students", "adolescents", "older adults", "clinical outpatients", "veterans",
            "new parents", "healthy volunteers", "twins", "schoolchildren", "shift workers"}},
          {"measure",
           {"self-reported anxiety", "reaction times", "memory recall", "mood ratings", "sleep quality",
            "attention span", "working memory scores", "stress levels", "life satisfaction", "symptom severity"}},
          {"psych_role",
           {"clinical psychologists", "therapists", "cognitive scientists", "developmental psychologists",
            "counselors", "behavioral researchers"}},
          {"psych_task",
           {"a memory task", "a decision-making task", "a word recall test", "a gambling task",
            "a visual search task", "a reading comprehension test"}},
          {"emotion", {"fear", "sadness", "anger", "guilt", "shame", "loneliness", "worry", "frustration"}},
          {"topic",
           {"the treatment of anxiety", "cognitive biases", "memory and attention", "childhood development",
            "the psychology of decision making", "therapy for depression", "the science of habits"}},
      },
  };
}

inline DomainTemplates history() {
  return {
      {
          // historical events
          "In {past_year}, {event} changed the balance of power in {region}.",
          "{event} weakened {empire} and disrupted trade across {region}.",
          "Chroniclers described {event} as a disaster for the people of {region}.",
          "{hist_role} {found} that {event} began earlier than the old chronicles claimed.",
          "During {event}, {ruler} fled the capital with {count} loyal soldiers.",
          "Tax records show that the population of {region} {fell} {adverb} after {event}.",
          "The rise of {empire} owed much to its control of {region}.",
          "{ruler} of {empire} ordered new roads and fortresses along the frontier.",
          // treaties
          "{treaty} ended years of war and redrew the borders of {region}.",
          "Under {treaty}, {empire} gave up its claims to {region}.",
          "The envoys who signed {treaty} met for {count} days before they agreed.",
          "{hist_role} still debate whether {treaty} brought a lasting peace.",
          "{treaty} granted merchants the right to trade freely across {region}.",
          "Copies of {treaty} were sent to every court in {region}.",
          "{ruler} refused to honour {treaty}, and fighting resumed {period}.",
          "The terms of {treaty} were signed in {past_year} after long negotiations.",
          // archaeological evidence
          "Archaeologists excavating {site} uncovered {count} {artifact}.",
          "{artifact} found at {site} suggest contact with traders from {region}.",
          "Radiocarbon dates from {site} place its first occupation earlier than expected.",
          "Excavations at {site} revealed {artifact} buried beneath a layer of ash.",
          "{hist_role} {found} that {artifact} from {site} were made with local materials.",
          "The discovery of {artifact} at {site} supports the account of ancient writers.",
          "Layers of ash at {site} point to a great fire during the reign of {ruler}.",
          "Survey teams mapped {site} and recorded {count} buildings and {artifact}.",
      },
      {
          {"empire",
           {"the Roman Empire", "the Ottoman Empire", "the Byzantine Empire", "the Mongol Empire",
            "the Habsburg monarchy", "the Han dynasty", "the Kingdom of Aksum", "the Inca Empire",
            "the Venetian Republic", "the Carolingian kingdom", "the Mali Empire", "ancient Athens"}},
          {"treaty",
           {"the Peace of Westphalia", "the Treaty of Tordesillas", "the Peace of Augsburg", "the Treaty of Utrecht",
            "the Congress of Vienna", "the Treaty of Nanking", "the Treaty of Versailles", "the Treaty of Kadesh",
            "the Treaty of Paris", "the Peace of Nicias"}},
          {"event",
           {"the fall of Constantinople", "the Black Death", "the French Revolution", "the sack of Rome",
            "the Glorious Revolution", "the Thirty Years War", "the Meiji Restoration", "the Hundred Years War",
            "the Reformation", "the collapse of the Bronze Age palaces"}},
          {"site",
           {"a Bronze Age settlement", "a Roman villa", "a Viking burial mound", "a medieval monastery",
            "a Neolithic tomb", "a Phoenician harbor", "a Maya temple complex", "an Iron Age hillfort",
            "a Greek shipwreck", "a Silk Road caravanserai"}},
          {"artifact",
           {"coins", "pottery shards", "bronze tools", "clay tablets", "inscriptions", "jewelry", "iron weapons",
            "seals", "textile fragments", "charred grain", "glass beads"}},
          {"ruler",
           {"the emperor", "the king", "the sultan", "the queen", "the regent", "the doge", "the pharaoh",
            "the khan", "the council of nobles"}},
          {"hist_role",
           {"historians", "archaeologists", "classicists", "medieval scholars", "epigraphers", "archivists"}},
          {"region",
           {"the Mediterranean", "the Balkans", "the Nile valley", "Mesopotamia", "the Baltic coast", "Anatolia",
            "Central Asia", "the Rhine frontier", "the Levant", "northern India"}},
          {"topic",
           {"the late Roman economy", "medieval trade routes", "the origins of the First World War",
            "ancient diplomacy", "the spread of the plague", "early modern treaties", "the archaeology of cities"}},
      },
  };
}

inline DomainTemplates medicine() {
  return {
      {
          // symptoms
          "Patients with {condition} often report {symptom} and {symptom}.",
          "The patient arrived with {symptom} that had lasted for {count} days.",
          "{symptom} is an early warning sign of {condition} in {patients}.",
          "{med_role} {found} that {symptom} was the most common complaint among {patients}.",
          "Doctors examined {organ} after the patient described {symptom}.",
          "Among {count} {patients}, {percent} had {symptom} at the first visit.",
          "Untreated {condition} can damage {organ} and cause {symptom}.",
          "{med_role} warned that {symptom} in {patients} should never be ignored.",
          "The symptoms of {condition} eased within {count} days of starting {treatment}.",
          // treatments
          "{treatment} lowered {outcome} in most {patients} with {condition}.",
          "{med_role} prescribed {treatment} to control {condition}.",
          "The standard treatment for {condition} combines {treatment} with changes in diet.",
          "Side effects of {treatment} include {side_effect} and {side_effect}.",
          "Patients who stopped {treatment} early saw their {outcome} worsen {period}.",
          "{treatment} protects {organ} in {patients} with {condition}.",
          "Guidelines now recommend {treatment} as the first treatment for {condition}.",
          "The pharmacy dispensed {treatment} to {count} {patients} last month.",
          // clinical trials
          "{trial} of {treatment} enrolled {count} {patients} with {condition}.",
          "In {trial}, {treatment} reduced {outcome} by {percent} compared with placebo.",
          "{trial} {found} no difference in {outcome} between the two groups.",
          "The investigators stopped {trial} early because of {side_effect}.",
          "Participants in {trial} were assigned at random to {treatment} or placebo.",
          "{trial} measured {outcome} in {patients} over {count} weeks.",
          "Results of {trial} in {city} {found} that {outcome} improved with {treatment}.",
          "The primary endpoint of {trial} was {outcome} after one year.",
      },
      {
          {"condition",
           {"type two diabetes", "hypertension", "asthma", "pneumonia", "migraine", "rheumatoid arthritis",
            "chronic kidney disease", "heart failure", "influenza", "osteoporosis", "sepsis", "psoriasis"}},
          {"symptom",
           {"chest pain", "a persistent cough", "fever", "fatigue", "shortness of breath", "joint swelling",
            "dizziness", "nausea", "blurred vision", "a skin rash", "muscle weakness", "night sweats"}},
          {"treatment",
           {"a low dose of aspirin", "an inhaled corticosteroid", "a beta blocker", "insulin therapy",
            "a course of antibiotics", "a statin", "an antiviral drug", "physical therapy", "a monoclonal antibody",
            "an ACE inhibitor", "a vitamin D supplement"}},
          {"trial",
           {"a randomized controlled trial", "a double-blind trial", "a large multicenter trial", "a phase three trial",
            "an open-label study", "a placebo-controlled trial", "a pilot study"}},
          {"outcome",
           {"blood pressure", "hospital admissions", "blood glucose levels", "mortality", "recovery time",
            "lung function", "pain scores", "infection rates", "bone density", "kidney function"}},
          {"side_effect",
           {"headaches", "mild nausea", "dizziness", "liver problems", "low blood sugar", "a dry cough",
            "skin irritation", "fatigue"}},
          {"med_role",
           {"physicians", "cardiologists", "nurses", "clinical researchers", "pharmacists", "epidemiologists",
            "surgeons", "general practitioners"}},
          {"patients",
           {"adult patients", "elderly patients", "children", "pregnant women", "smokers",
            "patients in intensive care", "outpatients", "older adults"}},
          {"organ", {"the heart", "the lungs", "the liver", "the kidneys", "the brain", "the immune system"}},
          {"topic",
           {"heart disease", "antibiotic resistance", "the prevention of diabetes", "vaccine safety",
            "chronic pain", "the care of elderly patients", "new cancer drugs"}},
      },
  };
}

inline DomainTemplates business() {
  return {
      {
          // revenue
          "{company} reported that {metric} {rose} {adverb} in the {quarter} quarter.",
          "Revenue at {company} reached {money} last year.",
          "{company} said {metric} {fell} by {percent} because of {business_event}.",
          "{exec_role} expect {metric} to recover {period}.",
          "Sales of {product} brought {company} {money} in new revenue.",
          "{company} cut its forecast after {metric} {fell} in the {quarter} quarter.",
          "Strong demand for {product} lifted {metric} at {company}.",
          "{company} posted a loss of {money} after {business_event}.",
          // market analysis
          "Analysts estimate that {market} will grow by {percent} a year.",
          "{market} has become crowded, and prices {fell} {adverb}.",
          "A survey of {count} customers {found} rising demand for {product} in {market}.",
          "{company} holds about {percent} of {market} in {city}.",
          "Competition in {market} {rose} after {business_event}.",
          "{exec_role} {found} that {market} is more sensitive to prices than expected.",
          "Market research {found} that younger buyers prefer {product}.",
          "Demand in {market} {rose} {period} as consumers returned.",
          // management strategies
          "{company} introduced {strategy} to improve {metric}.",
          "{exec_role} approved {strategy} after a long review.",
          "Under {strategy}, {company} cut costs by {money}.",
          "Managers at {company} said {strategy} made decisions faster.",
          "{strategy} helped {company} keep its best employees.",
          "{exec_role} questioned whether {strategy} would pay off {period}.",
          "The new chief executive replaced {strategy} with a focus on {product}.",
          "{company} hired consultants to design {strategy}.",
      },
      {
          {"company",
           {"the company", "a regional retailer", "a software firm", "a logistics startup", "a family-owned bakery",
            "an airline", "a consumer electronics maker", "a telecom operator", "a furniture manufacturer",
            "a hotel chain", "a fashion brand", "an insurance group"}},
          {"market",
           {"the electric vehicle market", "the cloud computing market", "the coffee market",
            "the online advertising market", "the housing market", "the smartphone market",
            "the renewable energy market", "the streaming market", "the commercial real estate market",
            "the grocery sector"}},
          {"strategy",
           {"a cost reduction program", "a flatter management structure", "agile project teams",
            "a customer loyalty program", "vertical integration", "an expansion into new markets",
            "a subscription model", "outsourcing of customer service", "a merger with a competitor",
            "remote work policies", "lean manufacturing"}},
          {"metric",
           {"quarterly revenue", "operating margins", "net profit", "market share", "customer retention",
            "earnings per share", "cash flow", "sales volume", "employee turnover", "the share price"}},
          {"exec_role",
           {"senior executives", "board members", "analysts", "shareholders", "financial officers", "consultants",
            "managers", "investors"}},
          {"business_event",
           {"a price war", "a supply chain disruption", "a product recall", "a hostile takeover bid",
            "a rebranding campaign", "a strike", "an interest rate increase"}},
          {"product",
           {"electric bicycles", "cloud storage", "organic coffee", "smart watches", "budget flights",
            "home insurance", "office furniture", "streaming subscriptions", "frozen meals"}},
          {"quarter", {"first", "second", "third", "fourth"}},
          {"topic",
           {"retail pricing", "corporate governance", "the future of remote work", "supply chains",
            "startup funding", "the economics of streaming", "customer loyalty"}},
      },
  };
}

inline const DomainTemplates& templates(EnglishDomain domain) {
  static const std::array<DomainTemplates, 4> all{psychology(), history(), medicine(), business()};
  return all[static_cast<std::size_t>(domain)];
}

inline std::string_view pick(const std::vector<std::string_view>& phrases, Rng& rng) {
  return phrases[static_cast<std::size_t>(uniform_index(rng, static_cast<Index>(phrases.size())))];
}

inline Index uniform_between(Rng& rng, Index low, Index high) { return low + uniform_index(rng, high - low + 1); }

/// The numbers templates ask for, drawn: {year} (recent), {past_year}, {count}, {percent} and {money}.
inline bool draw_number(std::string_view name, Rng& rng, std::string& out) {
  if (name == "year") {
    out += std::to_string(uniform_between(rng, 1950, 2023));
  } else if (name == "past_year") {
    out += std::to_string(uniform_between(rng, 400, 1900));
  } else if (name == "count") {
    out += std::to_string(uniform_between(rng, 12, 480));
  } else if (name == "percent") {
    out += std::to_string(uniform_between(rng, 3, 85));
    out += " percent";
  } else if (name == "money") {
    // Appended piece by piece: g++ 12 warns falsely (-Wrestrict) about "$" + std::string here.
    out += '$';
    out += std::to_string(uniform_between(rng, 2, 950));
    out += uniform_index(rng, 2) == 0 ? " million" : " billion";
  } else {
    return false;
  }
  return true;
}

/// The phrases of slot `name`: the domain's, else the shared ones; null when neither defines it.
inline const std::vector<std::string_view>* find_slot(std::string_view name, const DomainTemplates& domain) {
  for (const auto* slots : {&domain.slots, &shared_slots()})
    for (const Slot& slot : *slots)
      if (slot.name == name) return &slot.phrases;
  return nullptr;
}

/// Fills every {slot} of `sentence` from the domain's slots, the shared ones or the drawn numbers, and
/// starts the sentence with a capital letter. A slot used twice in a sentence gets two different phrases
/// ("fever and nausea", not "fever and fever").
inline std::string render(std::string_view sentence, const DomainTemplates& domain, Rng& rng) {
  std::string out;
  std::vector<std::string_view> used;
  std::size_t pos = 0;
  while (pos < sentence.size()) {
    const std::size_t open = sentence.find('{', pos);
    if (open == std::string_view::npos) {
      out += sentence.substr(pos);
      break;
    }
    const std::size_t close = sentence.find('}', open);
    require(close != std::string_view::npos, "domain corpus: template '", sentence, "' has an unclosed slot");
    out += sentence.substr(pos, open - pos);
    const std::string_view name = sentence.substr(open + 1, close - open - 1);
    if (!draw_number(name, rng, out)) {
      const std::vector<std::string_view>* phrases = find_slot(name, domain);
      require(phrases != nullptr, "domain corpus: template '", sentence, "' has the slot {", name,
              "}, which neither its domain nor the shared slots define");
      std::string_view phrase = pick(*phrases, rng);
      while (std::find(used.begin(), used.end(), phrase) != used.end()) phrase = pick(*phrases, rng);
      used.push_back(phrase);
      out += phrase;
    }
    pos = close + 1;
  }
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

}  // namespace domain_text

/// The number of sentence templates of a domain (its own, not the shared ones).
inline Index domain_template_count(EnglishDomain domain) {
  return static_cast<Index>(domain_text::templates(domain).sentences.size());
}

/// Template `index` of `domain` with its slots filled (index in [0, domain_template_count(domain))).
inline std::string render_domain_template(EnglishDomain domain, Index index, Rng& rng) {
  const auto& t = domain_text::templates(domain);
  require(index >= 0 && index < domain_template_count(domain), "render_domain_template: index ", index,
          " of the ", domain_name(domain), " templates, which number ", domain_template_count(domain));
  return domain_text::render(t.sentences[static_cast<std::size_t>(index)], t, rng);
}

/// Shared template `index` filled with `domain`'s topics.
inline std::string render_shared_template(EnglishDomain domain, Index index, Rng& rng) {
  const auto& sentences = domain_text::shared_sentences();
  require(index >= 0 && index < static_cast<Index>(sentences.size()), "render_shared_template: index ", index,
          " of the shared templates, which number ", sentences.size());
  return domain_text::render(sentences[static_cast<std::size_t>(index)], domain_text::templates(domain), rng);
}

inline Index shared_template_count() { return static_cast<Index>(domain_text::shared_sentences().size()); }

/// One sample of `domain`: two or three of its sentences, all different templates, and in two samples of
/// five one shared sentence at a random place among them.
inline std::string generate_domain_sample(EnglishDomain domain, Rng& rng) {
  const Index own = 2 + uniform_index(rng, 2);
  std::vector<Index> order(static_cast<std::size_t>(domain_template_count(domain)));
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<Index>(i);
  shuffle(order, rng);
  std::vector<std::string> sentences;
  for (Index i = 0; i < own; ++i)
    sentences.push_back(render_domain_template(domain, order[static_cast<std::size_t>(i)], rng));
  if (uniform_index(rng, 5) < 2) {
    const Index place = uniform_index(rng, own + 1);
    sentences.insert(sentences.begin() + place,
                     render_shared_template(domain, uniform_index(rng, shared_template_count()), rng));
  }
  std::string text;
  for (const std::string& sentence : sentences) text += (text.empty() ? "" : " ") + sentence;
  return text;
}

/// The pretraining, MoE-training and validation sets, each domain's samples in turn, drawn from `rng`: the
/// same seed gives the same corpus. A sample that repeats an earlier text is drawn again, so every text is
/// distinct.
inline DomainCorpus generate_domain_corpus(const DomainCorpusOptions& options, Rng& rng) {
  require(options.pretrain_per_domain > 0 && options.moe_per_domain > 0 && options.validation_per_domain > 0,
          "generate_domain_corpus: sample counts must be positive, got pretrain ", options.pretrain_per_domain,
          ", moe ", options.moe_per_domain, ", validation ", options.validation_per_domain);
  DomainCorpus corpus;
  std::unordered_set<std::string> seen;
  const auto fill = [&](std::vector<DomainSample>& set, Index per_domain) {
    for (const EnglishDomain domain : english_domains)
      for (Index i = 0; i < per_domain; ++i) {
        std::string text = generate_domain_sample(domain, rng);
        for (int attempt = 1; !seen.insert(text).second; ++attempt) {
          require(attempt < 1000, "generate_domain_corpus: the ", domain_name(domain),
                  " templates gave only repeats after ", seen.size(), " distinct samples");
          text = generate_domain_sample(domain, rng);
        }
        set.push_back({domain, std::move(text)});
      }
  };
  fill(corpus.pretrain, options.pretrain_per_domain);
  fill(corpus.moe, options.moe_per_domain);
  fill(corpus.validation, options.validation_per_domain);
  return corpus;
}

}  // namespace moe::examples
