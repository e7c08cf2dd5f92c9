//! The text scored when no corpus is given: plain English prose written for phiquant (a story,
//! explanations, instructions and a dialogue), long enough for a few chunks of 512 tokens with
//! the tokenizers of the supported models. It makes `verify` work out of the box and keeps
//! `export --verify` quick; a real gate wants a real corpus (`--corpus wiki.test.raw`).

/// The built-in corpus.
pub const BUILTIN_CORPUS: &str = "\
The lighthouse keeper's daughter had never seen the mainland in winter. Every autumn, when the \
last supply boat left the harbour, she stood on the rocks and watched its wake fade into the grey \
water until there was nothing left to watch. Her father said the island was the whole world for \
five months of the year, and that it was a large enough world for anyone who paid attention to it.\n\
\n\
She paid attention. She learned the names of the birds that stayed and the birds that left. She \
learned that the wind from the north smelled of ice and the wind from the south smelled of rain, \
and that a ring around the moon meant a storm within two days. She kept a notebook in which she \
drew the shapes of the waves, and by the end of her eleventh winter she could tell, from the \
sound of the water against the cliffs, whether the tide was rising or falling.\n\
\n\
One morning in February, the radio stopped working. Her father opened the back of the set, \
looked at the tangle of wires for a long time, and closed it again. \"We will have to manage,\" he \
said. For three weeks they heard no voice but their own. They read the books on the shelf twice \
over, they mended the nets, and in the evenings they played cards by the light of the lamp. When \
the first boat of spring finally appeared on the horizon, the girl was almost sorry to see it.\n\
\n\
Water covers about seventy percent of the surface of the Earth, but only a small part of it is \
fresh water that people can drink. Most of the fresh water is frozen in glaciers and ice sheets, \
and much of the rest lies underground. The water that falls as rain or snow has usually travelled \
a long way. Heat from the sun evaporates water from oceans, lakes and plants; the vapour rises, \
cools and condenses into clouds; and when the droplets in a cloud grow heavy enough, they fall. \
This cycle has no beginning and no end, and the same water has been moving through it for \
billions of years.\n\
\n\
Rivers carry water from the land back to the sea. Along the way they cut valleys, carry sand and \
stone, and build wide plains of fertile soil where they flood. Many of the oldest cities in the \
world grew up beside rivers, because a river offered fresh water, a way to travel, and land good \
enough to feed a growing population. The same rivers could also destroy those cities when they \
rose too high, so people learned to build walls, canals and reservoirs to control them.\n\
\n\
To bake a simple loaf of bread, you need flour, water, salt and yeast. Mix five hundred grams of \
flour with ten grams of salt and seven grams of dried yeast in a large bowl. Add three hundred \
and fifty millilitres of warm water and stir until the dough comes together. Turn it out onto a \
floured table and knead it for about ten minutes, until it is smooth and springs back when you \
press it with a finger. Put the dough back in the bowl, cover it with a cloth, and leave it \
somewhere warm for an hour, or until it has doubled in size. Shape it into a loaf, let it rise \
again for half an hour, and bake it in a hot oven for thirty to thirty-five minutes. The bread is \
done when it sounds hollow when you tap the bottom.\n\
\n\
\"Are you sure this is the right road?\" asked Sam, looking at the map upside down.\n\
\"No,\" said Priya. \"But it is the only road, so it must be the right one.\"\n\
\"That is not how roads work.\"\n\
\"It is how this road works. Look, there is a sign.\"\n\
The sign was old and leaning, and most of its letters had been worn away by the weather. Sam \
read what was left of it aloud: \"Something-ford, four miles.\"\n\
\"There you are,\" said Priya. \"We are going to Something-ford.\"\n\
\"We were going to the coast.\"\n\
\"Then we will go to the coast after Something-ford. I am sure they have tea.\"\n\
They did have tea, as it turned out, and a bakery, and a small museum about the history of the \
bridge that gave the village its name. By the time they reached the coast it was evening, and \
the sea was the colour of the inside of a shell.\n\
\n\
A computer program is a list of instructions that a machine follows one after another. The \
instructions are simple: add two numbers, compare them, store a value, jump to another \
instruction. What makes programs powerful is that these simple steps can be repeated millions of \
times each second, and combined in ways that solve complicated problems. A good programmer breaks \
a large problem into smaller ones, solves each small problem in a way that can be tested on its \
own, and then puts the pieces together. When something goes wrong, as it always does, the same \
habit helps: test each piece until you find the one that does not do what you expected.\n\
\n\
Numbers that are only divisible by one and by themselves are called prime numbers. The first few \
are two, three, five, seven, eleven and thirteen. There are infinitely many of them, a fact that \
was proved more than two thousand years ago with a short and elegant argument: if there were only \
a finite list of primes, you could multiply them all together and add one, and the result would \
not be divisible by any prime on the list. Prime numbers are used today to protect messages sent \
over the internet, because it is easy to multiply two large primes but very hard to find them \
again from their product.\n\
\n\
In the spring the old orchard behind the school filled with blossom, white and pale pink, and \
for two weeks the air smelled sweet. The children were not allowed to climb the trees, but they \
were allowed to sit under them at lunchtime, and most days they did. The teacher who looked after \
the orchard was a quiet man who knew the name of every variety of apple. He told them that some of \
the trees were older than the school, and that one of them had been planted by a farmer whose \
house had stood on the same ground a hundred and fifty years before. In the autumn, when the \
apples were ripe, the whole school helped to pick them, and the kitchen made pies until nobody \
could look at another apple.\n\
\n\
Good sleep matters more than most people think. During sleep the body repairs itself and the \
brain sorts through the events of the day, keeping some memories and letting others go. Adults \
usually need between seven and nine hours each night, and children need more. Going to bed and \
getting up at the same time every day helps, as does keeping the bedroom dark, quiet and cool. \
Screens are best put away an hour before bed, because their light can make it harder to fall \
asleep. A short walk in daylight, especially in the morning, helps the body keep its clock.\n\
\n\
When the storm finally reached the island, it came faster than anyone expected. The sky turned \
the colour of slate, the first gust tore a shutter from its hinges, and within minutes the rain \
was falling so hard that the girl could not see the lighthouse from the kitchen window. Her father \
pulled on his coat and went out to check the lamp. She waited by the door, counting the seconds \
between the flashes of lightning and the roll of the thunder, as he had taught her to do. The \
count grew shorter, then longer again. By midnight the wind had dropped, and when her father came \
back in, soaked to the skin, he was smiling. \"The light never went out,\" he said. \"Not once.\"\n";

#[cfg(test)]
mod tests {
    #[test]
    fn is_long_enough_for_a_few_chunks() {
        let words = super::BUILTIN_CORPUS.split_whitespace().count();
        assert!(words > 1300, "{words} words");
    }
}
