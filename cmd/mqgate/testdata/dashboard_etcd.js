// The dashboard of an instance that reads etcd: its etcd and fleet state.
'use strict';
const bt = require(process.env.BROWSERTEST_LIB);

(async () => {
  const browser = await bt.launch();
  try {
    const page = await bt.newPage(browser);
    await page.goto(process.env.URL + '/dashboard?key=' + process.env.KEY);
    await page.waitForSelector('#conn-state.live');
    await page.waitForSelector('#fleet-state');
    bt.result({
      etcd: (await page.textContent('#etcd-state')).trim(),
      fleet: (await page.textContent('#fleet-state')).trim(),
    });
  } finally {
    await browser.close();
  }
})().catch((err) => { console.error(err); process.exit(1); });
